//! Planted defects: switchable bugs, each reproducing one real bug class, all off by default.
//! A checker is trusted only once a test shows it fires on its defect and stays silent without.

use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Defect {
    AckBeforeFsync,
    NoDirFsync,
    WriteIntoNew,
    BounceOnStorageError,
    DropOnLmtp4xx,
    BounceABounce,
    ReuseUidAfterRestart,
    DeliverAfterRefusal,
    RetryWithoutBackoff,
    BounceOn4xx,
    GiveUpEarly,
    DsnNotMultipartReport,
    RetryAfter5xx,
    DuplicateDsn,
    ImpatientSender,
    AcceptBeyondCapacity,
    LmtpSingleReply,
    FsyncErrorIgnored,
    NoChecksum,
    KeepUidvalidityOnRollback,
    RecoverTmpIntoNew,
    QueueNamePerMs,
    NoQueueChecksum,
    DupRcptDeliveredTwice,
    DsnToHeaderFrom,
    StoreWideUidLock,
    UidVisibleOutOfOrder,
    MxRetryWithoutBackoff,
    RetryScheduleTooEarly,
    NoFsyncAfterUnlink,
    RecoverNewOnly,
    /// Recovery clears `queue/` as it clears `incoming/`: acknowledged mail waiting at a crash is gone.
    RecoverQueueAsDebris,
    /// The MX's log and the wire disagree: 250 first, durable and logged 30 s later.
    AckLoggedLate,
    StuffingDotCounted,
    PostmasterRefused,
    ReceivedForFirstRcpt,
    RcptParamsUnchecked,
    MailSizeSignAccepted,
    DsnDated1970,
    DsnFromPostmaster,
    DataAfterRefusedLastRcpt,
    BounceOfflineCohort,
    IosKeepsUidCacheAcrossUidvalidity,
}

impl Defect {
    pub const ALL: &'static [Defect] = &[
        Defect::AckBeforeFsync,
        Defect::NoDirFsync,
        Defect::WriteIntoNew,
        Defect::BounceOnStorageError,
        Defect::DropOnLmtp4xx,
        Defect::BounceABounce,
        Defect::ReuseUidAfterRestart,
        Defect::DeliverAfterRefusal,
        Defect::RetryWithoutBackoff,
        Defect::BounceOn4xx,
        Defect::GiveUpEarly,
        Defect::DsnNotMultipartReport,
        Defect::RetryAfter5xx,
        Defect::DuplicateDsn,
        Defect::ImpatientSender,
        Defect::AcceptBeyondCapacity,
        Defect::LmtpSingleReply,
        Defect::FsyncErrorIgnored,
        Defect::NoChecksum,
        Defect::KeepUidvalidityOnRollback,
        Defect::RecoverTmpIntoNew,
        Defect::QueueNamePerMs,
        Defect::NoQueueChecksum,
        Defect::DupRcptDeliveredTwice,
        Defect::DsnToHeaderFrom,
        Defect::StoreWideUidLock,
        Defect::UidVisibleOutOfOrder,
        Defect::MxRetryWithoutBackoff,
        Defect::RetryScheduleTooEarly,
        Defect::NoFsyncAfterUnlink,
        Defect::RecoverNewOnly,
        Defect::RecoverQueueAsDebris,
        Defect::AckLoggedLate,
        Defect::StuffingDotCounted,
        Defect::PostmasterRefused,
        Defect::ReceivedForFirstRcpt,
        Defect::RcptParamsUnchecked,
        Defect::MailSizeSignAccepted,
        Defect::DsnDated1970,
        Defect::DsnFromPostmaster,
        Defect::DataAfterRefusedLastRcpt,
        Defect::BounceOfflineCohort,
        Defect::IosKeepsUidCacheAcrossUidvalidity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Defect::AckBeforeFsync => "ack-before-fsync",
            Defect::NoDirFsync => "no-dir-fsync",
            Defect::WriteIntoNew => "write-into-new",
            Defect::BounceOnStorageError => "bounce-on-storage-error",
            Defect::DropOnLmtp4xx => "drop-on-lmtp-4xx",
            Defect::BounceABounce => "bounce-a-bounce",
            Defect::ReuseUidAfterRestart => "reuse-uid-after-restart",
            Defect::DeliverAfterRefusal => "deliver-after-refusal",
            Defect::RetryWithoutBackoff => "retry-without-backoff",
            Defect::BounceOn4xx => "bounce-on-4xx",
            Defect::GiveUpEarly => "give-up-early",
            Defect::DsnNotMultipartReport => "dsn-not-multipart-report",
            Defect::RetryAfter5xx => "retry-after-5xx",
            Defect::DuplicateDsn => "duplicate-dsn",
            Defect::ImpatientSender => "impatient-sender",
            Defect::AcceptBeyondCapacity => "accept-beyond-capacity",
            Defect::LmtpSingleReply => "lmtp-single-reply",
            Defect::FsyncErrorIgnored => "fsync-error-ignored",
            Defect::NoChecksum => "no-checksum",
            Defect::KeepUidvalidityOnRollback => "keep-uidvalidity-on-rollback",
            Defect::RecoverTmpIntoNew => "recover-tmp-into-new",
            Defect::QueueNamePerMs => "queue-name-per-ms",
            Defect::NoQueueChecksum => "no-queue-checksum",
            Defect::DupRcptDeliveredTwice => "dup-rcpt-delivered-twice",
            Defect::DsnToHeaderFrom => "dsn-to-header-from",
            Defect::StoreWideUidLock => "store-wide-uid-lock",
            Defect::UidVisibleOutOfOrder => "uid-visible-out-of-order",
            Defect::NoFsyncAfterUnlink => "no-fsync-after-unlink",
            Defect::MxRetryWithoutBackoff => "mx-retry-without-backoff",
            Defect::RetryScheduleTooEarly => "retry-schedule-too-early",
            Defect::RecoverNewOnly => "recover-new-only",
            Defect::RecoverQueueAsDebris => "recover-queue-as-debris",
            Defect::AckLoggedLate => "ack-logged-late",
            Defect::StuffingDotCounted => "stuffing-dot-counted",
            Defect::PostmasterRefused => "postmaster-refused",
            Defect::ReceivedForFirstRcpt => "received-for-first-rcpt",
            Defect::RcptParamsUnchecked => "rcpt-params-unchecked",
            Defect::MailSizeSignAccepted => "mail-size-sign-accepted",
            Defect::DsnDated1970 => "dsn-dated-1970",
            Defect::DsnFromPostmaster => "dsn-from-postmaster",
            Defect::DataAfterRefusedLastRcpt => "data-after-refused-last-rcpt",
            Defect::BounceOfflineCohort => "bounce-offline-cohort",
            Defect::IosKeepsUidCacheAcrossUidvalidity => "ios-keeps-uid-cache-across-uidvalidity",
        }
    }

    /// What the bug does, and the invariants expected to catch it.
    pub fn description(self) -> &'static str {
        match self {
            Defect::AckBeforeFsync => "MX answers 250 before its queue file is fsynced (A1, A2)",
            Defect::NoDirFsync => "store skips the directory fsync after renaming into new/ (A1, A15, A2)",
            Defect::WriteIntoNew => "store writes the message straight into new/ instead of tmp/ then rename (A15)",
            Defect::BounceOnStorageError => "MX answers a storage error with 554 5.3.0 instead of 451 4.3.0 (A12)",
            Defect::DropOnLmtp4xx => "queue drops a recipient on an LMTP 4xx instead of retrying (A2, A16)",
            Defect::BounceABounce => "remote sender sends a DSN for a message whose reverse-path is <> (A9)",
            Defect::ReuseUidAfterRestart => "store recomputes UIDNEXT from the files it finds after a restart (A19, A20)",
            Defect::DeliverAfterRefusal => "MX leaves the queue file of a refused transaction in the queue (A4, A13)",
            Defect::RetryWithoutBackoff => "remote sender retries every minute (scaled) whatever its policy says (A6)",
            Defect::BounceOn4xx => "remote sender treats a 4xx or a lost connection as permanent and bounces (A5)",
            Defect::GiveUpEarly => "remote sender gives up after a quarter of its queue lifetime (A7)",
            Defect::DsnNotMultipartReport => "remote sender returns mail as a plain-text note, not an RFC 3464 report (A10)",
            Defect::RetryAfter5xx => "remote sender retries a recipient the MX refused with 5xx once before bouncing it (A8)",
            Defect::DuplicateDsn => "remote sender sends every failure DSN twice (A11)",
            Defect::ImpatientSender => "remote sender's SMTP timeouts are a tenth of RFC 5321's (A14)",
            Defect::AcceptBeyondCapacity => "MX with a full queue answers 250 and drops the message instead of 452 (A21, A2)",
            Defect::LmtpSingleReply => "store answers LMTP's end of data once, like SMTP, instead of once per recipient (A3)",
            Defect::FsyncErrorIgnored => "MX and store retry a failed fsync and trust its Ok, which on Linux means nothing was written (A1, A2)",
            Defect::NoChecksum => "POP3 serves a message without checking its bytes against the checksum in its name (A23)",
            Defect::KeepUidvalidityOnRollback => "after a restore from backup the store keeps UIDVALIDITY and the old UIDNEXT (A17, A18, A19)",
            Defect::RecoverTmpIntoNew => "store recovery publishes what it finds in tmp/ into new/ instead of removing it (A15, A23)",
            Defect::QueueNamePerMs => "the MX names a queue file by the millisecond and the session only: two messages accepted in one millisecond on one connection get one name; the second replaces the first though both got 250 (A2)",
            Defect::NoQueueChecksum => "the MX relays a queue file without checking it against its checksums: damaged bytes reach the mailbox, a flipped recipient is retried forever (A20, L1)",
            Defect::DupRcptDeliveredTwice => "MX queues a recipient named twice in one transaction twice, so the mailbox gets two copies (A13)",
            Defect::DsnToHeaderFrom => "remote sender returns mail to the header's Reply-To or From instead of the envelope reverse-path (A9)",
            Defect::StoreWideUidLock => {
                "store delivers under one store-wide lock held across disk I/O and does not recognise the MX's retries: one stalled mailbox freezes every delivery and each LMTP timeout adds a copy (A13)"
            }
            Defect::UidVisibleOutOfOrder => {
                "store reserves a UID under the mailbox lock but publishes after releasing it: with slow storage a lower UID becomes visible after higher ones (A17)"
            }
            Defect::NoFsyncAfterUnlink => "MX unlinks a delivered queue file without syncing the queue directory: a crash brings it back and its mail is handed to the store again (A16; A13 where the store makes a second copy; found by crash-explore)",
            Defect::MxRetryWithoutBackoff => "MX retries a deferred queue file at every queue scan, ignoring its backoff: it hammers a store that refuses or cannot be reached (A6)",
            Defect::RetryScheduleTooEarly => {
                "remote sender halves every wait of its policy after the first of a stage (never below the stage's first interval, so never below the policy's minimum): too early for that attempt (A6)"
            }
            Defect::RecoverNewOnly => {
                "store recovery indexes new/ only, as if a maildir had no cur/: after a restart every message its owner has read vanishes from the mailbox, never deleted, its UIDL gone (A19)"
            }
            Defect::RecoverQueueAsDebris => {
                "MX recovery takes what it finds in queue/ for debris of unfinished acceptances, as in incoming/, and removes it: mail acknowledged before a crash and not yet delivered is gone (A2; a kill -9 of a real server shows it, as `mailchaos drive` finds)"
            }
            Defect::AckLoggedLate => {
                "MX answers 250 before its queue file is durable, and logs the acceptance only once the syncs are done: its log looks right, the wire does not (A1, judged on the wire)"
            }
            Defect::StuffingDotCounted => "MX counts a line's stuffing dot toward its 998 octets: a 998-octet line that starts with \".\" is refused as too long (A26)",
            Defect::PostmasterRefused => "MX knows postmaster only as a mailbox like any other: <postmaster> is refused as relaying, postmaster@its-domain as an unknown user (A26)",
            Defect::ReceivedForFirstRcpt => "MX's Received field names the transaction's first recipient in every copy: each recipient reads who else got the message, Bcc included (A27)",
            Defect::RcptParamsUnchecked => "MX ignores RCPT parameters (it checks MAIL's): RCPT TO:<a> SIZE=+5 is accepted (A28)",
            Defect::MailSizeSignAccepted => "MX reads MAIL's SIZE with the integer parser alone, which takes a sign: MAIL FROM:<a> SIZE=+5 is accepted (A28)",
            Defect::DsnDated1970 => "remote sender dates its DSNs on the bare simulated clock (January 1970) and gives the DSN's own time as the original's Arrival-Date (A10)",
            Defect::DataAfterRefusedLastRcpt => "MX decides DATA by the transaction's last RCPT alone: when the last recipient was refused it answers 554 though earlier ones were accepted (A26)",
            Defect::BounceOfflineCohort => "store answers 550 5.2.1 for a mailbox of a cohort the operator has taken offline, instead of 450: the MX returns mail it should have held until the restore (A25, A12)",
            Defect::IosKeepsUidCacheAcrossUidvalidity => {
                "an IMAP client with a UID cache (the iOS kind) keeps it when the server's UIDVALIDITY changes (RFC 4549 §4.1 says drop it): after a restore it shows the old messages under UIDs that now name new ones, and never downloads those (A24, A20)"
            }
            Defect::DsnFromPostmaster => "MX returns a damaged queue file's message with MAIL FROM:<postmaster@…> instead of <>: a DSN that can itself bounce, and loop (A9)",
        }
    }

    pub fn parse(name: &str) -> Option<Defect> {
        Defect::ALL.iter().copied().find(|defect| defect.name() == name)
    }
}

/// The defects switched on for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defects(BTreeSet<Defect>);

impl Defects {
    pub fn none() -> Defects {
        Defects::default()
    }

    pub fn of(defects: &[Defect]) -> Defects {
        Defects(defects.iter().copied().collect())
    }

    pub fn has(&self, defect: Defect) -> bool {
        self.0.contains(&defect)
    }

    pub fn iter(&self) -> impl Iterator<Item = Defect> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
