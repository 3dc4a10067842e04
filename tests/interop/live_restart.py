#!/usr/bin/env python3
"""Durable live mode: Python's smtplib and poplib against `mailchaos serve --data-dir`, killed
with SIGKILL in the middle of the stream and started again.

    python3 tests/interop/live_restart.py --mailchaos target/release/mailchaos --workdir DIR \
        --port-offset 2500 [--messages 50] [--defect NAME]

The script runs `serve --data-dir DIR/data --history DIR/history.jsonl --ledger DIR/ledger`
itself, so it can kill it. It sends the messages over several SMTP connections (a few messages
each, one to three recipients), reads every mailbox over POP3 (UIDL, RETR: the mail stays on
the server) once half of them are in, then opens a connection, sends more messages and kills
the server with SIGKILL in the middle of a DATA block. It starts the server again on the same
directories, sends the rest and reads every mailbox again. It checks, as an independent client:

- every (message, recipient) that got a 250 arrives exactly once, byte for byte as sent apart
  from the trace fields the stack prepends (Return-Path, Received);
- the UIDL of every message seen before the kill is unchanged after it, and no UIDL seen
  before names another message after it (a reused UIDL makes a client skip new mail).

It stops the server (SIGTERM) and leaves DIR for `mailchaos check` and `verify-store`.
Exit 0 and a one-line summary on success; 1 with what differs; 2 when the server cannot be run.
"""

import argparse
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time

TIMEOUT_S = 10
DELIVERY_WAIT_S = 30
SENDER = "restart@client.example"
CRLF = b"\r\n"


class Failure(Exception):
    """The stack lost, duplicated or altered mail, or reused a UIDL."""


class Unreachable(Exception):
    """The server could not be started or reached."""


class Server:
    """One `mailchaos serve` process on the work directory."""

    def __init__(self, args):
        self.args = args
        command = [
            args.mailchaos, "serve", "--port-offset", str(args.port_offset),
            "--users", ",".join(args.users), "--domain", args.domain,
            "--data-dir", os.path.join(args.workdir, "data"),
            "--history", os.path.join(args.workdir, "history.jsonl"),
            "--ledger", os.path.join(args.workdir, "ledger"),
        ]
        for defect in args.defect:
            command += ["--defect", defect]
        log = open(os.path.join(args.workdir, "serve.log"), "ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        # `serve` prints its listening line once every server holds its port.
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise Unreachable(f"serve exited before listening (status {self.process.poll()})")
            if line.startswith(b"listening:"):
                return
        raise Unreachable("serve did not listen within 10 s")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT_S)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(TIMEOUT_S)


def message(number):
    """A small message with a Message-ID of its own, its lines varied (a dot-led line, a long one)."""
    body = f"message {number}\r\n.a line that starts with a dot\r\n{'x' * (40 + number * 7)}\r\n"
    return (
        f"From: <{SENDER}>\r\nSubject: restart {number}\r\nMessage-ID: <restart-{number}@client.example>\r\n"
        f"Date: Mon, 30 Nov 2026 01:00:00 +0000\r\n\r\n{body}"
    ).encode("ascii")


def recipients(args, number):
    """One to three mailboxes, varying with the message."""
    count = 1 + number % 3
    return [f"{args.users[(number + i) % len(args.users)]}@{args.domain}" for i in range(count)]


def send_batch(args, numbers, acked):
    """Sends these messages over one SMTP connection; a 250 at the end of DATA is an ack."""
    with smtplib.SMTP("127.0.0.1", args.port_offset + 25, timeout=TIMEOUT_S) as smtp:
        for number in numbers:
            rcpts = recipients(args, number)
            refused = smtp.sendmail(SENDER, rcpts, message(number))
            acked[number] = [rcpt for rcpt in rcpts if rcpt not in refused]


def send_then_kill(args, server, numbers, acked):
    """Sends these messages, then starts one more and kills the server in its DATA block."""
    smtp = smtplib.SMTP("127.0.0.1", args.port_offset + 25, timeout=TIMEOUT_S)
    for number in numbers:
        rcpts = recipients(args, number)
        refused = smtp.sendmail(SENDER, rcpts, message(number))
        acked[number] = [rcpt for rcpt in rcpts if rcpt not in refused]
    smtp.mail(SENDER)
    smtp.rcpt(f"{args.users[0]}@{args.domain}")
    smtp.putcmd("data")
    code, _ = smtp.getreply()
    if code != 354:
        raise Failure(f"DATA answered {code}, not 354")
    smtp.send(b"Subject: never finished\r\n\r\nhalf a message")
    server.kill()
    smtp.close()


def mailbox(args, user):
    """UIDL → message bytes of a mailbox, read over POP3 (the mail stays on the server)."""
    pop = poplib.POP3("127.0.0.1", args.port_offset + 110, timeout=TIMEOUT_S)
    try:
        pop.user(user)
        pop.pass_(f"pw-{user}")
        _, listing, _ = pop.uidl()
        messages = {}
        for line in listing:
            number, uidl = line.decode("ascii").split()
            _, lines, _ = pop.retr(int(number))
            messages[uidl] = CRLF.join(lines) + CRLF
        pop.quit()
        return messages
    finally:
        pop.close()


def without_trace(data):
    """The message less the trace fields the stack prepends (Return-Path, Received)."""
    lines = data.split(CRLF)
    at = 0
    while at < len(lines):
        if re.match(rb"(?i)^(return-path|received):", lines[at]):
            at += 1
            while at < len(lines) and lines[at][:1] in (b" ", b"\t"):
                at += 1
        else:
            break
    return CRLF.join(lines[at:])


def number_of(data):
    found = re.search(rb"Message-ID: <restart-(\d+)@client.example>", data)
    return int(found.group(1)) if found else None


def read_all(args, expected):
    """Every mailbox, once each holds the acknowledged mail (or the wait ran out)."""
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while True:
        boxes = {user: mailbox(args, user) for user in args.users}
        held = sum(len(box) for box in boxes.values())
        if held >= expected or time.monotonic() > deadline:
            return boxes
        time.sleep(0.3)


def judge(args, boxes, acked, before):
    """Exactly once per acknowledged recipient, bytes as sent, UIDLs kept and never reused."""
    for user, box in boxes.items():
        counts = {}
        for uidl, data in box.items():
            number = number_of(data)
            if number is None:
                raise Failure(f"{user}: UIDL {uidl} holds a message this client never sent")
            if without_trace(data) != message(number):
                raise Failure(f"{user}: UIDL {uidl} (message {number}) differs from what was sent")
            counts[number] = counts.get(number, 0) + 1
            seen = before.get(user, {}).get(uidl)
            if seen is not None and seen != number:
                raise Failure(f"{user}: UIDL {uidl} named message {seen} before the kill and message {number} after it")
        for number, rcpts in acked.items():
            if f"{user}@{args.domain}" in rcpts and counts.get(number, 0) != 1:
                raise Failure(f"{user}: message {number} was acknowledged and arrived {counts.get(number, 0)} times")
        for uidl, number in before.get(user, {}).items():
            if box.get(uidl) is None or number_of(box[uidl]) != number:
                raise Failure(f"{user}: message {number} was under UIDL {uidl} before the kill and is not after it")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailchaos", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--port-offset", type=int, required=True)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--users", default="anna,bruno,carla")
    parser.add_argument("--domain", default="libero.test")
    parser.add_argument("--defect", action="append", default=[])
    args = parser.parse_args()
    args.users = args.users.split(",")
    half, kill_after = args.messages // 2, args.messages * 3 // 5
    acked = {}
    server = Server(args)
    try:
        for start in range(0, half, 5):
            send_batch(args, range(start, min(start + 5, half)), acked)
        boxes = read_all(args, sum(len(rcpts) for rcpts in acked.values()))
        before = {user: {uidl: number_of(data) for uidl, data in box.items()} for user, box in boxes.items()}
        send_then_kill(args, server, range(half, kill_after), acked)
        server = Server(args)
        for start in range(kill_after, args.messages, 5):
            send_batch(args, range(start, min(start + 5, args.messages)), acked)
        boxes = read_all(args, sum(len(rcpts) for rcpts in acked.values()))
        judge(args, boxes, acked, before)
    finally:
        if server.process.poll() is None:
            server.stop()
    copies = sum(len(rcpts) for rcpts in acked.values())
    seen = sum(len(box) for box in before.values())
    print(f"live-restart: ok: {len(acked)} messages acknowledged ({copies} copies), each arrived once after a kill -9 in DATA; {seen} UIDLs seen before the kill kept")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as failure:
        print(f"live-restart: FAILED: {failure}")
        sys.exit(1)
    except (Unreachable, OSError, smtplib.SMTPException, poplib.error_proto, socket.timeout) as error:
        print(f"live-restart: cannot run: {error!r}")
        sys.exit(2)
