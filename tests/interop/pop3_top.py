#!/usr/bin/env python3
"""Interop: Python's poplib previews mail with TOP (RFC 1939 §7) on `mailchaos serve`.

smtplib sends one message (a dot-led body line included); poplib's capa() must name TOP, UIDL,
USER, RESP-CODES and PIPELINING; top(1, n) must give the header, the blank line and the first n
body lines as sent (poplib undoes the dot-stuffing); and the preview must leave the message
unread, which imaplib checks (no \\Seen flag) before RETR marks it read.

    python3 tests/interop/pop3_top.py --smtp-port 2525 --pop3-port 2610 --imap-port 2643

Exit 0 and a one-line summary on success; exit 1 on a mismatch.
"""

import argparse
import imaplib
import poplib
import smtplib
import sys
import time

TIMEOUT_S = 10
BODY_LINES = [b"first line", b".a line that starts with a dot", b"third line", b"fourth line"]


def message(domain):
    header = [b"From: interop@client.example", b"To: anna@" + domain.encode(), b"Subject: top", b"Message-ID: <top-interop@client.example>"]
    return header, b"\r\n".join(header + [b""] + BODY_LINES) + b"\r\n"


def check(condition, what):
    if not condition:
        print(f"interop: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def pop3_login(args):
    pop = poplib.POP3("127.0.0.1", args.pop3_port, timeout=TIMEOUT_S)
    pop.user("anna")
    pop.pass_("pw-anna")
    return pop


def seen(args):
    """Whether anna's first message has \\Seen, asked over IMAP."""
    imap = imaplib.IMAP4("127.0.0.1", args.imap_port, timeout=TIMEOUT_S)
    imap.login("anna", "pw-anna")
    imap.select("INBOX")
    status, data = imap.fetch("1", "(FLAGS)")
    imap.logout()
    check(status == "OK", f"FETCH FLAGS: {status} {data}")
    return b"\\Seen" in data[0]


def main():
    parser = argparse.ArgumentParser()
    for port in ("--smtp-port", "--pop3-port", "--imap-port"):
        parser.add_argument(port, type=int, required=True)
    parser.add_argument("--users", default="anna")
    parser.add_argument("--domain", default="libero.test")
    args = parser.parse_args()
    header, raw = message(args.domain)
    with smtplib.SMTP("127.0.0.1", args.smtp_port, timeout=TIMEOUT_S) as smtp:
        smtp.sendmail("interop@client.example", [f"anna@{args.domain}"], raw)
    deadline = time.monotonic() + 30
    while True:
        pop = pop3_login(args)
        if pop.stat()[0] == 1:
            break
        pop.quit()
        check(time.monotonic() < deadline, "the message never reached the mailbox")
        time.sleep(0.2)
    capabilities = pop.capa()
    for name in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"):
        check(name in capabilities, f"CAPA lacks {name}: {sorted(capabilities)}")
    for count in (0, 2, len(BODY_LINES), 99):
        _, lines, _ = pop.top(1, count)
        # The stack prepends trace fields (Return-Path, Received); the sent header follows them.
        blank = lines.index(b"")
        check(lines[blank - len(header):blank] == header, f"TOP 1 {count} header: {lines[:blank]}")
        check(lines[blank + 1:] == BODY_LINES[:count], f"TOP 1 {count} body: {lines[blank + 1:]}")
    pop.quit()
    check(not seen(args), "TOP marked the message read")
    pop = pop3_login(args)
    pop.retr(1)
    pop.quit()
    check(seen(args), "RETR did not mark the message read (the control of the check above)")
    print(f"interop: ok: pop3 TOP previewed 1 message with 0, 2, {len(BODY_LINES)} and 99 body lines, left it unread")


if __name__ == "__main__":
    main()
