//! The browser's side of notice delivery, without I/O. The server sends every stored notice after the session's
//! acknowledged cursor on each (re)connect, then the live ones, on every part's socket (and `GET /api/notices`
//! answers the same): so one notice may arrive several times, and out of order between parts. [`NoticeInbox`]
//! shows each once — by its `seq`, unique within the store's epoch, so nothing else of it need be read — and
//! says what to acknowledge.

use std::collections::VecDeque;

use crate::version::Epoch;

/// Seqs remembered to drop repeats: more than a session's inbox and the shop's list can re-send at once.
pub const REMEMBERED: usize = 1_200;

/// The notices one page has shown, for one store epoch.
#[derive(Debug, Default)]
pub struct NoticeInbox {
    epoch: Option<Epoch>,
    /// Seqs shown, oldest first (bounded by [`REMEMBERED`]).
    seen: VecDeque<u64>,
    /// The highest `seq` shown in this epoch: what to acknowledge.
    shown_upto: u64,
    /// The highest `seq` acknowledged (or asked to be).
    acked_upto: u64,
}

impl NoticeInbox {
    /// Take a notice as it arrived: `true` if it is new here and is to be shown; `false` for one already shown. A notice of another epoch than the one held starts over (the store was
    /// reset: its sequence starts again).
    pub fn offer(&mut self, epoch: &Epoch, seq: u64) -> bool {
        if self.epoch.as_ref() != Some(epoch) {
            *self = NoticeInbox { epoch: Some(epoch.clone()), ..NoticeInbox::default() };
        }
        if self.seen.contains(&seq) {
            return false;
        }
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back(seq);
        self.shown_upto = self.shown_upto.max(seq);
        true
    }

    /// What to acknowledge now, if anything new was shown: `(epoch, upto)`. Marks it as asked; if the
    /// acknowledgement is lost, [`NoticeInbox::retry_ack`] asks for it again.
    pub fn ack_due(&mut self) -> Option<(Epoch, u64)> {
        let epoch = self.epoch.clone()?;
        (self.shown_upto > self.acked_upto).then(|| {
            self.acked_upto = self.shown_upto;
            (epoch, self.shown_upto)
        })
    }

    /// The acknowledgement up to `upto` did not get through: ask again next time.
    pub fn retry_ack(&mut self, upto: u64) {
        if self.acked_upto == upto {
            self.acked_upto = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_notice_is_shown_once_whichever_socket_brings_it_and_the_highest_seq_is_acknowledged() {
        let (mut inbox, e) = (NoticeInbox::default(), Epoch::from_bits(1));
        assert_eq!(inbox.ack_due(), None, "nothing shown, nothing to acknowledge");
        assert!(inbox.offer(&e, 4));
        assert!(inbox.offer(&e, 9));
        assert!(!inbox.offer(&e, 4), "the same notice from another part's socket");
        assert!(inbox.offer(&e, 6), "an older one arriving late is still shown");
        assert_eq!(inbox.ack_due(), Some((e.clone(), 9)));
        assert_eq!(inbox.ack_due(), None, "asked once");
        inbox.retry_ack(9);
        assert_eq!(inbox.ack_due(), Some((e, 9)), "a lost acknowledgement is asked again");
    }

    #[test]
    fn another_epoch_starts_the_sequence_over() {
        let mut inbox = NoticeInbox::default();
        assert!(inbox.offer(&Epoch::from_bits(1), 40));
        assert_eq!(inbox.ack_due().map(|(_, n)| n), Some(40));
        let fresh = Epoch::from_bits(2);
        assert!(inbox.offer(&fresh, 1), "seq 1 of the new store is new");
        assert_eq!(inbox.ack_due(), Some((fresh, 1)), "acknowledged in the new epoch, not held back by 40");
    }

    #[test]
    fn the_remembered_seqs_are_bounded() {
        let (mut inbox, e) = (NoticeInbox::default(), Epoch::from_bits(1));
        for n in 0..=REMEMBERED as u64 {
            assert!(inbox.offer(&e, n + 1));
        }
        assert_eq!(inbox.seen.len(), REMEMBERED);
        assert!(inbox.offer(&e, 1), "the oldest was forgotten");
    }
}
