//! The mail domain's shared vocabulary: message fixtures and composition, content digests and
//! delivery status notifications (RFC 5322, RFC 3464), sender retry policies as published data
//! (RFC 5321 §4.5.4.1 and real MTAs' schedules), and the spelling of the store's maildir file
//! names.
//!
//! Both the stack (which writes these formats) and the checkers (which read what crossed a
//! boundary in them) depend on it, so it holds formats and data only: no behaviour of the
//! stack, no sockets, no disk, no simulator. It must never depend on another crate of ours.

pub mod maildir;
pub mod message;
pub mod policy;
