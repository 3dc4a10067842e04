#!/usr/bin/env python3
"""Interop: Python's own smtplib and poplib against `mailchaos serve`.

An independent client (the standard library, not our codecs) sends a handful of varied
messages over ONE SMTP connection, then reads every recipient's mailbox over POP3 and checks
that each message arrived exactly once per recipient, byte for byte as sent, apart from the
trace fields the stack prepends (Return-Path by the store, Received by the MX).

    python3 tests/interop/smtp_pop3_roundtrip.py --smtp-port 2525 --pop3-port 2610

Exit 0 and a one-line summary on success; exit 1 with a diff on any mismatch; exit 2 when the
server cannot be reached or refuses what it should take.
"""

import argparse
import difflib
import poplib
import re
import smtplib
import socket
import sys
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

TIMEOUT_S = 10
SENDER = "interop@client.example"
CRLF = b"\r\n"


class Failure(Exception):
    """A check failed: the stack lost, duplicated or altered mail."""


class Unreachable(Exception):
    """The server could not be reached, or refused what a conforming MX must take."""


class RecordingSMTP(smtplib.SMTP):
    """smtplib.SMTP that keeps the exact octets it hands to DATA.

    send_message flattens the message (and drops Bcc) before calling sendmail, so recording here
    captures what really went over the wire (before smtplib's dot-stuffing, which the server
    undoes and the POP3 server redoes and poplib undoes)."""

    def __init__(self, *args, **kwargs):
        self.recorded = []
        super().__init__(*args, **kwargs)

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        # A str is sent as ASCII with every line ending made CRLF (smtplib._fix_eols); bytes go
        # as they are.
        self.recorded.append(fix_eols(msg.encode("ascii")) if isinstance(msg, str) else bytes(msg))
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)


def fix_eols(data):
    """Every line ending made CRLF, as smtplib._fix_eols does to a str message."""
    return re.sub(rb"\r\n|\r|\n", CRLF, data)


def crlf_normalised(data):
    """What the stack stores for the octets smtplib's data() was given: smtplib appends a CRLF
    when they do not end in one (after a final bare LF too: that makes an empty line), and the
    stack ends a line at a bare LF and stores CRLF lines."""
    if not data.endswith(CRLF):
        data += CRLF
    return fix_eols(data)


def connect_smtp(host, port):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return RecordingSMTP(host, port, local_hostname="client.example", timeout=TIMEOUT_S)
        except (ConnectionRefusedError, socket.timeout) as error:
            if time.monotonic() > deadline:
                raise Unreachable(f"cannot connect to SMTP {host}:{port}: {error}") from error
            time.sleep(0.1)


def build_messages(domain, extensions, users):
    """(name, EmailMessage, envelope recipients, mail_options) for each message to send. Most go
    with send_message; the last three are flattened here and go with sendmail (see send_all)."""
    anna, bruno, carla = (f"{user}@{domain}" for user in users[:3])

    def base(subject, to, **headers):
        msg = EmailMessage()  # policy=email.policy.default: CRLF is chosen when flattening
        msg["From"] = f"Interop Sender <{SENDER}>"
        msg["To"] = to
        for name, value in headers.items():
            msg[name.replace("_", "-")] = value
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="client.example")
        return msg

    messages = []

    # 1. multipart/alternative: text and HTML.
    msg = base("multipart/alternative", anna)
    msg.set_content("Plain text part.\nSecond line.\n")
    msg.add_alternative("<html><body><p>HTML <b>part</b>.</p>\n<p>Second line.</p></body></html>\n", subtype="html")
    messages.append(("multipart-alternative", msg, [anna], []))

    # 2. An 8-bit UTF-8 body (BODY=8BITMIME, which the MX must advertise); the Subject is raw
    #    UTF-8 only if the MX offers SMTPUTF8, else RFC 2047 encoded by the email package.
    if "8bitmime" not in extensions:
        raise Unreachable(f"the MX does not advertise 8BITMIME (EHLO keywords: {sorted(extensions)})")
    options = ["BODY=8BITMIME"]
    msg = base("Grüße aus Zürich — 8 bit ✉", bruno)
    text = (
        "Grüße, café, naïve, Ærøskøbing, Straße.\n"
        "日本語のテキスト, русский текст, ελληνικά, עברית.\n"
        "Emoji outside the BMP: 📬🦀, combining: e\u0301.\n"
        ".A dot-led line in 8 bit: ünïcödé.\n"
    )
    msg.set_content(text, charset="utf-8", cte="8bit")
    if "smtputf8" in extensions:
        msg.policy = msg.policy.clone(utf8=True)
        options.append("SMTPUTF8")
    messages.append(("8bit-utf8", msg, [bruno], options))

    # 3. Lines starting with '.': a lone dot (would end DATA unstuffed), two dots, and more.
    msg = base("leading dots", anna)
    msg.set_content(
        "Before the dots.\n"
        ".\n"
        "..\n"
        "...\n"
        ".hidden\n"
        "..double\n"
        ". space after dot\n"
        " .not at the start\n"
        ".\n"
        ".last line is a dot line\n",
        cte="7bit",
    )
    messages.append(("leading-dots", msg, [anna], []))

    # 4. Two recipients in one transaction: one copy each, no recipient named in the trace.
    msg = base("two recipients", anna, Cc=bruno)
    msg.set_content("One transaction, two mailboxes.\nEach must get exactly one copy.\n")
    messages.append(("two-recipients", msg, [anna, bruno], []))

    # 5. The longest lines RFC 5321 allows (998 octets of text), one of them dot-led (999 octets
    #    on the wire once stuffed), and a long Subject the email package folds.
    long_plain = ("0123456789abcdef" * 63)[:998]
    long_dot = "." + ("x" * 997)
    msg = base("a long line " + " ".join(f"word{i}" for i in range(30)), carla)
    msg.set_content(f"Short line.\n{long_plain}\n{long_dot}\nAfter the long lines.\n", cte="7bit")
    messages.append(("long-lines", msg, [carla], []))

    # 6. A Bcc recipient: send_message drops the Bcc field; carla's copy must arrive, and anna's
    #    copy must not name carla anywhere (nor must carla's).
    msg = base("blind copy", anna, Bcc=carla)
    msg.set_content("To anna, blind copy to carla.\n")
    messages.append(("bcc", msg, [anna, carla], []))

    # 7. Built with the email package, sent with sendmail as raw bytes that lack a final line
    #    ending (smtplib adds the CRLF before the terminating dot) and carry trailing spaces.
    msg = base("no final newline", bruno)
    msg.set_content("Trailing spaces follow   \n\tA tab-led line.\nNo newline at the end.", cte="7bit")
    messages.append(("no-final-crlf", msg, [bruno], []))

    # 8. The classic script: msg.as_string() with LF line endings, passed to sendmail as a str,
    #    which smtplib turns into CRLF lines (and dot-stuffs).
    msg = base("str with LF endings", carla)
    msg.set_content("Sent as a str.\n.dot-led\nLF endings become CRLF.\n", cte="7bit")
    messages.append(("str-lf", msg, [carla], []))

    # 9. A naive client: LF-only bytes, sent as they are. The stack ends a line at a bare LF and
    #    stores CRLF lines; smtplib stuffs dot-led lines after a bare LF too.
    msg = base("bytes with bare LF endings", anna)
    msg.set_content("Bare LF endings.\n.dot-led after a bare LF\n.\nEnd.\n", cte="7bit")
    messages.append(("bytes-bare-lf", msg, [anna], []))

    return messages


def send_all(args, users):
    smtp = connect_smtp(args.host, args.smtp_port)
    try:
        code, reply = smtp.ehlo()
        if code != 250:
            raise Unreachable(f"EHLO refused: {code} {reply!r}")
        extensions = set(smtp.esmtp_features)
        messages = build_messages(args.domain, extensions, users)
        sent = []  # (name, envelope recipients, expected octets, message-id)
        times = []
        # Back to back on one connection, as fast as the replies allow.
        for name, msg, rcpts, options in messages:
            started = time.monotonic()
            if name == "no-final-crlf":
                raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
                raw = raw.rstrip(b"\r\n")
                refused = smtp.sendmail(SENDER, rcpts, raw, mail_options=options)
            elif name == "str-lf":
                refused = smtp.sendmail(SENDER, rcpts, msg.as_string(), mail_options=options)
            elif name == "bytes-bare-lf":
                raw = msg.as_bytes()
                if CRLF in raw:
                    raise Failure(f"message {name}: meant to carry LF endings only: {raw!r}")
                refused = smtp.sendmail(SENDER, rcpts, raw, mail_options=options)
            else:
                refused = smtp.send_message(msg, from_addr=SENDER, to_addrs=rcpts, mail_options=options)
            times.append(time.monotonic() - started)
            if refused:
                raise Failure(f"message {name}: recipients refused: {refused}")
            wire = smtp.recorded[-1]
            if name != "bytes-bare-lf" and re.search(rb"(?<!\r)\n|\r(?!\n)", wire):
                raise Failure(f"message {name}: the email package produced a bare CR or LF: {wire!r}")
            for line in crlf_normalised(wire).split(CRLF):
                if len(line) > 998:
                    raise Failure(f"message {name}: a line of {len(line)} octets was built; the script must stay within 998")
            sent.append((name, rcpts, crlf_normalised(wire), str(msg["Message-ID"])))
        code, reply = smtp.docmd("QUIT")
        if code != 221:
            raise Failure(f"QUIT answered {code} {reply!r}")
        return sent, times, extensions
    finally:
        smtp.close()


def pop3_session(args, user):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            pop = poplib.POP3(args.host, args.pop3_port, timeout=TIMEOUT_S)
            break
        except (ConnectionRefusedError, socket.timeout) as error:
            if time.monotonic() > deadline:
                raise Unreachable(f"cannot connect to POP3 {args.host}:{args.pop3_port}: {error}") from error
            time.sleep(0.1)
    try:
        pop.user(user)
        # The stack's rule (harness/stack/src/pop3.rs, password_of): pw-<user>.
        pop.pass_(f"pw-{user}")
    except poplib.error_proto as error:
        pop.close()
        raise Failure(f"POP3 login as {user} failed: {error}") from error
    return pop


def await_mail(args, expected):
    """Waits until every mailbox holds at least as many messages as were sent to it, then a
    little longer, so that a late duplicate shows up too."""
    deadline = time.monotonic() + args.deliver_timeout
    while True:
        counts = {}
        for user in expected:
            pop = pop3_session(args, user)
            try:
                counts[user] = pop.stat()[0]
            finally:
                pop.quit()
        if all(counts[user] >= len(expected[user]) for user in expected):
            return counts
        if time.monotonic() > deadline:
            want = {user: len(messages) for user, messages in expected.items()}
            raise Failure(f"mail not delivered within {args.deliver_timeout}s: mailboxes hold {counts}, expected {want}")
        time.sleep(0.2)


def split_trace(data):
    """The leading trace fields (Return-Path, Received, with their folded lines) and the rest."""
    lines = data.split(CRLF)
    index = 0
    fields = []
    while index < len(lines):
        line = lines[index]
        if re.match(rb"(?i)(Return-Path|Received):", line):
            fields.append(line)
        elif fields and line[:1] in (b" ", b"\t") and re.match(rb"(?i)Received:", fields[-1]):
            fields[-1] += CRLF + line
        else:
            break
        index += 1
    return fields, CRLF.join(lines[index:])


def show_diff(expected, actual):
    first = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    out = [f"    expected {len(expected)} octets, got {len(actual)}; first difference at octet {first}"]
    diff = difflib.unified_diff(
        [repr(line) for line in expected.split(CRLF)],
        [repr(line) for line in actual.split(CRLF)],
        "sent (CRLF lines)",
        "retrieved over POP3, trace stripped",
        lineterm="",
        n=2,
    )
    out.extend("    " + line[:300] for line in diff)
    return "\n".join(out)


def check_mailbox(args, user, address, expected, others):
    """Lists, UIDLs and RETRs the whole mailbox; returns the problems found."""
    problems = []
    pop = pop3_session(args, user)
    try:
        count, _size = pop.stat()
        _, listing, _ = pop.list()
        sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
        _, uidl_lines, _ = pop.uidl()
        uidls = {int(n): uid for n, uid in (line.split() for line in uidl_lines)}
        if sorted(sizes) != list(range(1, count + 1)) or sorted(uidls) != list(range(1, count + 1)):
            problems.append(f"{user}: STAT says {count}, LIST numbers {sorted(sizes)}, UIDL numbers {sorted(uidls)}")
        if len(set(uidls.values())) != len(uidls):
            problems.append(f"{user}: a UIDL is listed twice: {uidls}")
        retrieved = {}
        for number in sorted(sizes):
            _, lines, _octets = pop.retr(number)
            # poplib strips each line's CRLF and the stuffing dot of dot-led lines.
            data = CRLF.join(lines) + CRLF
            if sizes[number] != len(data):
                problems.append(f"{user}: message {number} (uidl {uidls.get(number)!r}): LIST says {sizes[number]} octets, RETR gave {len(data)}")
            retrieved[number] = data
    finally:
        pop.quit()

    by_id = {}
    for number, data in retrieved.items():
        trace, body = split_trace(data)
        found = re.search(rb"(?im)^Message-ID:\s*(<[^>\r\n]*>)", body)
        key = found.group(1).decode() if found else f"(no Message-ID, message {number})"
        by_id.setdefault(key, []).append((number, trace, body))

    for name, rcpts, wire, message_id in expected:
        copies = by_id.pop(message_id, [])
        if len(copies) != 1:
            problems.append(f"{user}: message {name} {message_id} arrived {len(copies)} times, expected exactly once")
        for number, trace, body in copies[:1]:
            returns = [field for field in trace if field.lower().startswith(b"return-path:")]
            received = [field for field in trace if field.lower().startswith(b"received:")]
            if returns != [f"Return-Path: <{SENDER}>".encode()] or not received:
                problems.append(f"{user}: message {name}: trace fields are not one Return-Path <{SENDER}> and at least one Received: {trace}")
            if not any(f"by mx.{args.domain}".encode() in field for field in received):
                problems.append(f"{user}: message {name}: no Received field names by mx.{args.domain}: {received}")
            leaked = [other for other in others if other != address and other.encode() in CRLF.join(trace)]
            if leaked:
                problems.append(f"{user}: message {name}: the trace names other recipients {leaked}: {trace}")
            if len(rcpts) == 1 and not any(f"for <{address}>".encode() in field for field in received):
                problems.append(f"{user}: message {name}: its only recipient is not named in Received: {received}")
            if body != wire:
                problems.append(f"{user}: message {name} {message_id} (POP3 #{number}) differs from what was sent:\n" + show_diff(wire, body))
    for key, copies in by_id.items():
        problems.append(f"{user}: {len(copies)} unexpected message(s) {key} (POP3 #{[copy[0] for copy in copies]})")
    return problems, len(retrieved)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--pop3-port", type=int, required=True)
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
        sent, times, extensions = send_all(args, users)
        expected = {user: [] for user in users[:3]}
        for item in sent:
            for rcpt in item[1]:
                expected[rcpt.split("@")[0]].append(item)
        counts = await_mail(args, expected)
        # Anything queued twice shows up in a moment: wait past a few of the queue's scans.
        time.sleep(1.5)
        problems = []
        retrieved = 0
        addresses = [f"{user}@{args.domain}" for user in users[:3]]
        for user in expected:
            found, total = check_mailbox(args, user, f"{user}@{args.domain}", expected[user], addresses)
            problems.extend(found)
            retrieved += total
    except Unreachable as error:
        print(f"interop: cannot run: {error}", file=sys.stderr)
        return 2
    except Failure as error:
        print(f"interop: FAIL: {error}", file=sys.stderr)
        return 1
    except (smtplib.SMTPException, poplib.error_proto, OSError) as error:
        print(f"interop: FAIL: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if problems:
        print(f"interop: FAIL: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    copies = sum(len(items) for items in expected.values())
    print(
        f"interop: ok: {len(sent)} messages on one SMTP connection ({', '.join(name for name, *_ in sent)}), "
        f"{copies} copies retrieved byte-identical over POP3 from {len(expected)} mailboxes "
        f"(retrieved {retrieved}, settled counts {counts}); fastest send {min(times) * 1000:.2f} ms; "
        f"EHLO offered {' '.join(sorted(extensions))}; python {sys.version.split()[0]}; "
        f"{time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
