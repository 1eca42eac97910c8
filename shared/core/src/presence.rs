//! Presence, in counts only — never who: how many shoppers are here now (sessions with an open connection, on
//! any instance) and, per product, how many carts hold it. The server pushes what changed as one `PRESENCE`
//! frame at most once per interval per connection, so a burst of activity never becomes a storm of frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::ProductId;

/// The attribute naming the product whose "in N carts" label an element shows (its text is kept current by the
/// bundle's link).
pub const IN_CARTS_ATTR: &str = "data-in-carts-of";
/// The attribute of an element showing "N shoppers here".
pub const ONLINE_ATTR: &str = "data-online";

/// A product is labelled "in N carts" from this many on (one cart is most likely the shopper's own).
pub const IN_CARTS_SHOWN_FROM: u64 = 2;

/// The counts as a `PRESENCE` frame carries them: all of them on connect, then only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Shoppers (sessions) with at least one open connection, on every instance.
    pub online: u64,
    /// Carts holding each product (products in no cart are 0 once they were in one, else absent).
    pub in_carts: BTreeMap<ProductId, u64>,
}

impl Presence {
    /// What changed from `before` to `self`: `online` (always carried) and the products whose count moved
    /// (gone ones as 0); `None` when nothing did.
    pub fn changes_since(&self, before: &Presence) -> Option<Presence> {
        let mut in_carts = BTreeMap::new();
        for (id, n) in &self.in_carts {
            if before.in_carts.get(id).copied().unwrap_or(0) != *n {
                in_carts.insert(id.clone(), *n);
            }
        }
        for (id, n) in &before.in_carts {
            if *n > 0 && !self.in_carts.contains_key(id) {
                in_carts.insert(id.clone(), 0);
            }
        }
        (self.online != before.online || !in_carts.is_empty()).then_some(Presence { online: self.online, in_carts })
    }

    /// These counts as read (a store lists only products in some cart), with every product `before` counted
    /// and these do not as 0: the counts a connection that missed some changes is sent are then whole — a
    /// product that left the last cart says 0, not nothing, which would leave its old count on the page.
    pub fn with_gone_as_zero(mut self, before: &Presence) -> Presence {
        for id in before.in_carts.keys() {
            self.in_carts.entry(id.clone()).or_insert(0);
        }
        self
    }

    /// Take a frame's counts in (a change, or everything on connect).
    pub fn apply(&mut self, frame: &Presence) {
        self.online = frame.online;
        for (id, n) in &frame.in_carts {
            self.in_carts.insert(id.clone(), *n);
        }
    }

    /// "in N carts" for a product, from [`IN_CARTS_SHOWN_FROM`] on.
    pub fn in_carts_label(&self, id: &ProductId) -> Option<String> {
        in_carts_label(self.in_carts.get(id).copied().unwrap_or(0))
    }

    /// "N shoppers here"; nothing before the first count.
    pub fn online_label(&self) -> Option<String> {
        online_label(self.online)
    }
}

/// "in N carts" for `n` carts, from [`IN_CARTS_SHOWN_FROM`] on.
pub fn in_carts_label(n: u64) -> Option<String> {
    (n >= IN_CARTS_SHOWN_FROM).then(|| format!("in {n} carts"))
}

/// "N shoppers here" (for one: "1 shopper here"); nothing for 0 (not counted yet).
pub fn online_label(n: u64) -> Option<String> {
    match n {
        0 => None,
        1 => Some("1 shopper here".to_owned()),
        n => Some(format!("{n} shoppers here")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(online: u64, in_carts: &[(&str, u64)]) -> Presence {
        Presence { online, in_carts: in_carts.iter().map(|(id, n)| (ProductId::from(*id), *n)).collect() }
    }

    #[test]
    fn only_what_changed_is_sent_and_nothing_when_nothing_did() {
        let before = counts(3, &[("mug", 2), ("pen", 1)]);
        assert_eq!(before.changes_since(&before), None);
        let after = counts(3, &[("mug", 3), ("pen", 1), ("lamp", 1)]);
        assert_eq!(after.changes_since(&before), Some(counts(3, &[("lamp", 1), ("mug", 3)])));
        assert_eq!(counts(2, &[("mug", 2), ("pen", 1)]).changes_since(&before), Some(counts(2, &[])));
        assert_eq!(counts(3, &[("mug", 2)]).changes_since(&before), Some(counts(3, &[("pen", 0)])), "gone: 0");
        let mut shown = before.clone();
        shown.apply(&after.changes_since(&before).unwrap());
        assert_eq!(shown, after);
    }

    #[test]
    fn whole_counts_say_0_for_a_product_that_left_every_cart_so_a_page_that_missed_the_change_corrects_it() {
        let before = counts(2, &[("mug", 1), ("pen", 2)]);
        let read = counts(2, &[("pen", 2)]); // the store lists only products in some cart
        let now = read.with_gone_as_zero(&before);
        assert_eq!(now, counts(2, &[("mug", 0), ("pen", 2)]));
        assert_eq!(now.changes_since(&before), Some(counts(2, &[("mug", 0)])));
        // A page that had the mug at 1 and missed that change is sent the whole counts: it ends on 0.
        let mut page = before.clone();
        page.apply(&now);
        assert_eq!(page.in_carts_label(&"mug".into()), None);
        assert_eq!(page, now);
        // Once 0, it stays in the counts and is no change.
        let next = counts(2, &[("pen", 2)]).with_gone_as_zero(&now);
        assert_eq!(next, now);
        assert_eq!(next.changes_since(&now), None);
    }

    #[test]
    fn labels_start_at_their_thresholds() {
        let p = counts(1, &[("mug", IN_CARTS_SHOWN_FROM), ("pen", IN_CARTS_SHOWN_FROM - 1)]);
        assert_eq!(p.in_carts_label(&"mug".into()).as_deref(), Some("in 2 carts"));
        assert_eq!(p.in_carts_label(&"pen".into()), None);
        assert_eq!(p.in_carts_label(&"lamp".into()), None);
        assert_eq!(p.online_label().as_deref(), Some("1 shopper here"));
        assert_eq!(counts(12, &[]).online_label().as_deref(), Some("12 shoppers here"));
        assert_eq!(Presence::default().online_label(), None);
    }
}
