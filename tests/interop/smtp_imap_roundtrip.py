#!/usr/bin/env python3
"""Interop: Python's own smtplib and imaplib against `mailchaos serve`.

An independent client (the standard library, not our codecs) sends varied messages over one
SMTP connection: those `smtp_pop3_roundtrip.py` builds with the email package, and the RFC 5322
fixtures of `fixtures/messages/` as raw bytes. Then, per mailbox, imaplib:

- LOGIN, SELECT INBOX: EXISTS is what was sent, UIDVALIDITY and UIDNEXT are there and sane;
- UID SEARCH ALL names every message once, in ascending order;
- UID FETCH (UID FLAGS RFC822.SIZE BODY.PEEK[]): each message byte for byte as sent, apart
  from the trace fields the stack prepends (Return-Path by the store, Received by the MX),
  its size as RFC822.SIZE says, and not \\Seen (PEEK);
- BODY[] sets \\Seen; UID STORE +FLAGS (\\Seen), then (\\Deleted): FLAGS and UID SEARCH agree;
- EXPUNGE, and a new SELECT shows the message gone, the others kept, UIDVALIDITY unchanged;
- LOGOUT.

And hostile input on a raw socket: an overlong line, garbage bytes, an unknown command and an
oversized literal each get BAD (the literal never a continuation request), too many invalid
commands get BYE, and the server still serves the next client.

    python3 tests/interop/smtp_imap_roundtrip.py --smtp-port 2525 --imap-port 2643

Exit 0 and a one-line summary on success; 1 with the problems on any mismatch; 2 when the
server cannot be reached.
"""

import argparse
import imaplib
import os
import re
import smtplib
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtp_pop3_roundtrip import (  # noqa: E402  (the POP3 script's messages and checks)
    CRLF,
    SENDER,
    TIMEOUT_S,
    Failure,
    Unreachable,
    build_messages,
    connect_smtp,
    crlf_normalised,
    show_diff,
    split_trace,
)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "messages")


def fixture_messages(users, domain):
    """(name, raw bytes, envelope recipients, mail options) for each fixture, a Message-ID put
    in front so that the copy can be found again; the users take turns."""
    out = []
    for number, name in enumerate(sorted(os.listdir(FIXTURES))):
        if not name.endswith(".eml"):
            continue
        with open(os.path.join(FIXTURES, name), "rb") as handle:
            raw = handle.read()
        message_id = f"<fixture-{number}-{os.getpid()}-{int(time.time() * 1000)}@client.example>"
        raw = f"Message-ID: {message_id}\r\n".encode() + raw
        user = users[number % len(users)]
        options = ["BODY=8BITMIME"] if any(byte > 127 for byte in raw) else []
        out.append((f"fixture:{name}", raw, [f"{user}@{domain}"], options, message_id))
    return out


def send_all(args, users):
    """Sends every message on one SMTP connection; returns (name, rcpts, expected octets, id)."""
    smtp = connect_smtp(args.host, args.smtp_port)
    sent = []
    try:
        code, reply = smtp.ehlo()
        if code != 250:
            raise Unreachable(f"EHLO refused: {code} {reply!r}")
        extensions = set(smtp.esmtp_features)
        for name, msg, rcpts, options in build_messages(args.domain, extensions, users):
            refused = smtp.send_message(msg, from_addr=SENDER, to_addrs=rcpts, mail_options=options)
            if refused:
                raise Failure(f"message {name}: recipients refused: {refused}")
            sent.append((name, rcpts, crlf_normalised(smtp.recorded[-1]), str(msg["Message-ID"])))
        for name, raw, rcpts, options, message_id in fixture_messages(users, args.domain):
            refused = smtp.sendmail(SENDER, rcpts, raw, mail_options=options)
            if refused:
                raise Failure(f"message {name}: recipients refused: {refused}")
            sent.append((name, rcpts, crlf_normalised(smtp.recorded[-1]), message_id))
        code, reply = smtp.docmd("QUIT")
        if code != 221:
            raise Failure(f"QUIT answered {code} {reply!r}")
    finally:
        smtp.close()
    return sent


def imap_session(args, user):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            imap = imaplib.IMAP4(args.host, args.imap_port, timeout=TIMEOUT_S)
            break
        except (ConnectionRefusedError, socket.timeout) as error:
            if time.monotonic() > deadline:
                raise Unreachable(f"cannot connect to IMAP {args.host}:{args.imap_port}: {error}") from error
            time.sleep(0.1)
    if "IMAP4REV1" not in imap.capabilities:
        raise Failure(f"the server does not say IMAP4rev1: {imap.capabilities}")
    try:
        # The stack's rule (harness/stack/src/pop3.rs, password_of): pw-<user>, for IMAP too.
        imap.login(user, f"pw-{user}")
    except imaplib.IMAP4.error as error:
        raise Failure(f"IMAP LOGIN as {user} failed: {error}") from error
    return imap


def select(imap, user):
    """SELECT INBOX: (EXISTS, UIDVALIDITY, UIDNEXT), each checked to be there."""
    typ, data = imap.select("INBOX")
    if typ != "OK":
        raise Failure(f"{user}: SELECT INBOX answered {typ} {data}")
    exists = int(data[0])
    values = {}
    for key in ("UIDVALIDITY", "UIDNEXT", "RECENT"):
        _, found = imap.response(key)
        if not found or found[0] is None:
            raise Failure(f"{user}: SELECT gave no {key}")
        values[key] = int(found[-1])
    if values["UIDVALIDITY"] <= 0 or values["UIDNEXT"] <= 0:
        raise Failure(f"{user}: SELECT gave UIDVALIDITY {values['UIDVALIDITY']} UIDNEXT {values['UIDNEXT']}")
    return exists, values["UIDVALIDITY"], values["UIDNEXT"]


def uid_search(imap, user, *criteria):
    typ, data = imap.uid("SEARCH", None, *criteria)
    if typ != "OK":
        raise Failure(f"{user}: UID SEARCH {' '.join(criteria)} answered {typ} {data}")
    return [int(uid) for uid in b" ".join(item for item in data if item).split()]


def fetch(imap, user, uids, items):
    """UID FETCH: {uid: (attributes line, literal or None)}."""
    typ, data = imap.uid("FETCH", ",".join(str(uid) for uid in uids), items)
    if typ != "OK":
        raise Failure(f"{user}: UID FETCH {items} answered {typ} {data}")
    out = {}
    last = None
    for item in data:
        line, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        if line in (None, b")"):
            continue
        if literal is None and last is not None and not re.match(rb"\d+ \(", line):
            # What follows a literal in the same response (imaplib hands it over apart).
            out[last] = (out[last][0] + line, out[last][1])
            continue
        found = re.search(rb"UID (\d+)", line)
        if not found:
            raise Failure(f"{user}: a FETCH response without UID: {item!r}")
        last = int(found.group(1))
        out[last] = (line, literal)
    return out


def flags_of(line):
    found = re.search(rb"FLAGS \(([^)]*)\)", line)
    return set(found.group(1).decode().split()) if found else None


def await_mail(args, expected):
    """Waits until every mailbox holds at least what was sent to it (EXISTS on SELECT)."""
    deadline = time.monotonic() + args.deliver_timeout
    while True:
        counts = {}
        for user in expected:
            imap = imap_session(args, user)
            try:
                counts[user] = select(imap, user)[0]
            finally:
                imap.logout()
        if all(counts[user] >= len(expected[user]) for user in expected):
            return counts
        if time.monotonic() > deadline:
            want = {user: len(items) for user, items in expected.items()}
            raise Failure(f"mail not delivered within {args.deliver_timeout}s: mailboxes hold {counts}, expected {want}")
        time.sleep(0.2)


def check_mailbox(args, user, expected):
    """The whole round trip on one mailbox; returns (problems, messages fetched)."""
    problems = []
    imap = imap_session(args, user)
    try:
        exists, uidvalidity, uidnext = select(imap, user)
        if exists != len(expected):
            problems.append(f"{user}: SELECT says {exists} EXISTS, {len(expected)} were sent")
        uids = uid_search(imap, user, "ALL")
        if len(uids) != exists or uids != sorted(set(uids)):
            problems.append(f"{user}: UID SEARCH ALL gave {uids} for {exists} messages")
        if uids and max(uids) >= uidnext:
            problems.append(f"{user}: UIDNEXT {uidnext} is not above the UIDs {uids}")
        fetched = fetch(imap, user, uids, "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        by_id = {}
        for uid in uids:
            line, data = fetched.get(uid, (b"", None))
            if data is None:
                problems.append(f"{user}: UID {uid}: no body in {line!r}")
                continue
            size = re.search(rb"RFC822\.SIZE (\d+)", line)
            if not size or int(size.group(1)) != len(data):
                problems.append(f"{user}: UID {uid}: RFC822.SIZE {size and size.group(1)!r}, BODY[] has {len(data)} octets")
            if "\\Seen" in (flags_of(line) or set()):
                problems.append(f"{user}: UID {uid}: \\Seen before anything read it: {line!r}")
            trace, body = split_trace(data)
            found = re.search(rb"(?im)^Message-ID:\s*(<[^>\r\n]*>)", body)
            key = found.group(1).decode() if found else f"(no Message-ID, UID {uid})"
            by_id.setdefault(key, []).append((uid, trace, body))
        for name, _rcpts, wire, message_id in expected:
            copies = by_id.pop(message_id, [])
            if len(copies) != 1:
                problems.append(f"{user}: message {name} {message_id} arrived {len(copies)} times, expected exactly once")
            for uid, trace, body in copies[:1]:
                if not trace or trace[0] != f"Return-Path: <{SENDER}>".encode() or not any(field.lower().startswith(b"received:") for field in trace):
                    problems.append(f"{user}: message {name}: trace fields are not a Return-Path <{SENDER}> and a Received: {trace}")
                if body != wire:
                    problems.append(f"{user}: message {name} {message_id} (UID {uid}) differs from what was sent:\n" + show_diff(wire, body))
        for key, copies in by_id.items():
            problems.append(f"{user}: {len(copies)} unexpected message(s) {key} (UIDs {[copy[0] for copy in copies]})")
        if problems or len(uids) < 2:
            return problems, len(fetched)

        first, second = uids[0], uids[1]
        # BODY[] (not PEEK) sets \Seen on the second; STORE sets it on the first.
        line, _ = fetch(imap, user, [second], "(BODY[])").get(second, (b"", None))
        after = fetch(imap, user, [second], "(FLAGS)").get(second, (b"", None))[0]
        if "\\Seen" not in (flags_of(after) or set()):
            problems.append(f"{user}: UID {second}: BODY[] did not set \\Seen: {line!r} then {after!r}")
        typ, data = imap.uid("STORE", str(first), "+FLAGS", "(\\Seen)")
        if typ != "OK" or "\\Seen" not in (flags_of(data[0] or b"") or set()):
            problems.append(f"{user}: UID STORE {first} +FLAGS (\\Seen) answered {typ} {data}")
        if uid_search(imap, user, "SEEN") != sorted([first, second]):
            problems.append(f"{user}: UID SEARCH SEEN gave {uid_search(imap, user, 'SEEN')}, expected {[first, second]}")
        if set(uid_search(imap, user, "UNSEEN")) != set(uids) - {first, second}:
            problems.append(f"{user}: UID SEARCH UNSEEN gave {uid_search(imap, user, 'UNSEEN')}")
        typ, data = imap.uid("STORE", str(first), "+FLAGS", "(\\Deleted)")
        if typ != "OK" or flags_of(data[0] or b"") != {"\\Seen", "\\Deleted"}:
            problems.append(f"{user}: UID STORE {first} +FLAGS (\\Deleted) answered {typ} {data}")
        if uid_search(imap, user, "DELETED") != [first]:
            problems.append(f"{user}: UID SEARCH DELETED gave {uid_search(imap, user, 'DELETED')}, expected {[first]}")
        if uid_search(imap, user, "UID", f"{first}:*", "UNDELETED") != [uid for uid in uids if uid > first]:
            problems.append(f"{user}: UID SEARCH UID {first}:* UNDELETED gave {uid_search(imap, user, 'UID', f'{first}:*', 'UNDELETED')}")
        typ, data = imap.expunge()
        if typ != "OK" or data != [b"1"]:
            problems.append(f"{user}: EXPUNGE answered {typ} {data}, expected message 1 expunged")
        exists_after, uidvalidity_after, _ = select(imap, user)
        if exists_after != exists - 1 or uidvalidity_after != uidvalidity:
            problems.append(f"{user}: after EXPUNGE SELECT says {exists_after} EXISTS UIDVALIDITY {uidvalidity_after}; expected {exists - 1} and {uidvalidity}")
        if uid_search(imap, user, "ALL") != uids[1:]:
            problems.append(f"{user}: after EXPUNGE UID SEARCH ALL gave {uid_search(imap, user, 'ALL')}, expected {uids[1:]}")
        typ, data = imap.close()
        if typ != "OK":
            problems.append(f"{user}: CLOSE answered {typ} {data}")
    finally:
        typ, _ = imap.logout()
        if typ != "BYE":
            problems.append(f"{user}: LOGOUT answered {typ}")
    return problems, len(fetched)


class Raw:
    """A raw IMAP connection, for what imaplib will not send."""

    def __init__(self, args):
        self.sock = socket.create_connection((args.host, args.imap_port), timeout=TIMEOUT_S)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self):
        return self.file.readline(65536)

    def send(self, data):
        self.sock.sendall(data)

    def until_tagged(self, tag):
        """Lines up to and including the one tagged `tag` (or the connection's end)."""
        lines = []
        while True:
            line = self.line()
            if not line:
                return lines
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def close(self):
        self.file.close()
        self.sock.close()


def check_hostile(args, user):
    problems = []
    raw = Raw(args)
    try:
        if not raw.greeting.startswith(b"* OK"):
            problems.append(f"hostile: greeting {raw.greeting!r}")
        raw.send(b"h1 NOOP " + b"X" * 100_000 + CRLF)
        lines = raw.until_tagged("h1")
        if not lines or not lines[-1].startswith(b"h1 BAD"):
            problems.append(f"hostile: a 100,000-octet line got {lines[-3:]!r}")
        raw.send(b"\x00\xff\xfe\x01 garbage \x80\r\n")
        line = raw.line()
        if not line.startswith(b"* BAD"):
            problems.append(f"hostile: garbage bytes got {line!r}")
        raw.send(b"h2 FROBNICATE now\r\n")
        lines = raw.until_tagged("h2")
        if not lines or not lines[-1].startswith(b"h2 BAD"):
            problems.append(f"hostile: an unknown command got {lines!r}")
        raw.send(b"h3 LOGIN {99999999}\r\n")
        line = raw.line()
        if not line.startswith(b"h3 BAD"):
            problems.append(f"hostile: a 99,999,999-octet literal got {line!r} (a continuation request would invite it)")
        raw.send(b"h4 LOGIN " + user.encode() + b" {" + str(len(f"pw-{user}")).encode() + b"}\r\n")
        line = raw.line()
        if not line.startswith(b"+"):
            problems.append(f"hostile: a small literal got {line!r}, not a continuation request")
        raw.send(f"pw-{user}\r\n".encode())
        lines = raw.until_tagged("h4")
        if not lines or not lines[-1].startswith(b"h4 OK"):
            problems.append(f"hostile: LOGIN with a literal password got {lines!r}")
        raw.send(b"h5 LOGOUT\r\n")
        lines = raw.until_tagged("h5")
        if len(lines) < 2 or not lines[0].startswith(b"* BYE") or not lines[-1].startswith(b"h5 OK"):
            problems.append(f"hostile: LOGOUT got {lines!r}")
    finally:
        raw.close()
    # Invalid commands without end: BYE, and the connection closes.
    raw = Raw(args)
    try:
        raw.send(b"".join(f"g{i} NONSENSE\r\n".encode() for i in range(40)))
        seen = []
        while True:
            line = raw.line()
            if not line:
                break
            seen.append(line)
        if not seen or not seen[-1].startswith(b"* BYE") or len(seen) > 30:
            problems.append(f"hostile: 40 invalid commands got {len(seen)} lines ending {seen[-2:]!r}, expected BAD then BYE")
    finally:
        raw.close()
    # The server is still there for the next client.
    imap = imap_session(args, user)
    try:
        typ, data = imap.select("INBOX")
        if typ != "OK":
            problems.append(f"hostile: after it all, SELECT answered {typ} {data}")
    finally:
        imap.logout()
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--imap-port", type=int, required=True)
    parser.add_argument("--domain", default="libero.test")
    parser.add_argument("--users", default="anna,bruno,carla", help="three mailboxes of the server, comma-separated")
    parser.add_argument("--deliver-timeout", type=float, default=30.0, help="seconds to wait for delivery")
    args = parser.parse_args()
    users = [user.strip() for user in args.users.split(",") if user.strip()]
    if len(users) < 3:
        parser.error("--users must name three mailboxes")
    socket.setdefaulttimeout(TIMEOUT_S)

    started = time.monotonic()
    try:
        sent = send_all(args, users)
        expected = {user: [] for user in users[:3]}
        for item in sent:
            for rcpt in item[1]:
                expected[rcpt.split("@")[0]].append(item)
        counts = await_mail(args, expected)
        # Anything queued twice shows up in a moment: wait past a few of the queue's scans.
        time.sleep(1.5)
        problems = []
        fetched = 0
        for user in expected:
            found, total = check_mailbox(args, user, expected[user])
            problems.extend(found)
            fetched += total
        problems.extend(check_hostile(args, users[0]))
    except Unreachable as error:
        print(f"interop: cannot run: {error}", file=sys.stderr)
        return 2
    except Failure as error:
        print(f"interop: FAIL: {error}", file=sys.stderr)
        return 1
    except (smtplib.SMTPException, imaplib.IMAP4.error, OSError) as error:
        print(f"interop: FAIL: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if problems:
        print(f"interop: FAIL: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    copies = sum(len(items) for items in expected.values())
    print(
        f"interop: ok: imap: {len(sent)} messages on one SMTP connection "
        f"({', '.join(name for name, *_ in sent)}), {copies} copies fetched byte-identical over IMAP "
        f"from {len(expected)} mailboxes (fetched {fetched}, settled counts {counts}); "
        f"\\Seen by BODY[] and STORE, \\Deleted, EXPUNGE and re-SELECT checked in each; hostile input "
        f"answered BAD/BYE; python {sys.version.split()[0]}; {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
