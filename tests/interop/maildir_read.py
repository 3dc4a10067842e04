#!/usr/bin/env python3
"""Interop: Python's own mailbox and email packages read a store that mailchaos wrote.

An independent maildir reader (the standard library, not our code) opens every mailbox of a
store directory written by `mailchaos run ... --store-dir DIR` with
`mailbox.Maildir(DIR/mail/<user>, create=False)`, as mutt or any maildir tool would, and parses
every message with the `email` package (policy.default). Issue #8: the store used to have no
cur/, so such readers refused it; a message a POP3 client retrieved is marked read (moved into
cur/ with the info ":2,S", as Dovecot does), and must read back as seen.

    python3 tests/interop/maildir_read.py DIR [--min-read N]

Checks, per mailbox: tmp/, new/ and cur/ exist; every message parses without a defect (in any
MIME part); a message in cur/ carries the 'S' flag, one in new/ carries none. Across the store:
at least one message, and at least --min-read (default 1) of them read, in cur/.

Exit 0 and a one-line summary on success; exit 1 with every failure listed; exit 2 when DIR is
not a store directory.
"""

import argparse
import email
import email.policy
import mailbox
import os
import sys


def check_mailbox(path, failures):
    """Reads one maildir; returns (messages, read). Appends what is wrong to failures."""
    for sub in ("tmp", "new", "cur"):
        if not os.path.isdir(os.path.join(path, sub)):
            failures.append(f"{path}: no {sub}/ (a maildir has tmp/, new/ and cur/)")
    try:
        box = mailbox.Maildir(path, factory=None, create=False)
        keys = sorted(box.keys())
    except Exception as error:  # NoSuchMailboxError, FileNotFoundError for a missing cur/ …
        failures.append(f"{path}: mailbox.Maildir refuses it: {error!r}")
        return 0, 0
    read = 0
    for key in keys:
        where = f"{path} message {key}"
        message = box.get_message(key)
        subdir, flags = message.get_subdir(), message.get_flags()
        if subdir == "cur":
            read += 1
            if "S" not in flags:
                failures.append(f"{where}: in cur/ without the seen flag (flags {flags!r})")
        elif flags:
            failures.append(f"{where}: in {subdir}/ with flags {flags!r}")
        parsed = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        for part in parsed.walk():
            if part.defects:
                failures.append(f"{where}: {part.get_content_type()} part has defects {part.defects!r}")
        if not parsed.get("Message-ID") or not parsed.get("Return-Path"):
            failures.append(f"{where}: no Message-ID or Return-Path header")
    return len(keys), read


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="the store directory (it holds mail/<user>/)")
    parser.add_argument("--min-read", type=int, default=1, help="messages that must be read, in cur/")
    args = parser.parse_args()
    root = os.path.join(args.store, "mail")
    if not os.path.isdir(root):
        print(f"maildir: {root} is not a directory: not a store written by mailchaos", file=sys.stderr)
        return 2
    users = sorted(entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry)))
    failures, messages, read = [], 0, 0
    for user in users:
        count, seen = check_mailbox(os.path.join(root, user), failures)
        messages += count
        read += seen
    if not users:
        failures.append(f"{root}: no mailboxes")
    if messages == 0:
        failures.append("no message in any mailbox")
    if read < args.min_read:
        failures.append(f"{read} message(s) read (in cur/), expected at least {args.min_read}")
    if failures:
        for failure in failures:
            print(f"maildir: FAIL: {failure}")
        return 1
    print(f"maildir: ok: {len(users)} mailboxes, {messages} messages ({read} read, in cur/ with S), every message parsed without defects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
