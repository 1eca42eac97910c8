//! Money as integer cents. Floats never hold a price: `0.1 + 0.2` must not reach a shopper's total.

use serde::{Deserialize, Serialize};

/// An amount in the smallest unit of its currency (cents for EUR/USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(pub u64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    /// `self × quantity`, or `None` on overflow (impossible within [`crate::CartLimits`], checked anyway).
    pub fn checked_times(self, quantity: u32) -> Option<Cents> {
        self.0.checked_mul(u64::from(quantity)).map(Cents)
    }

    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// A price as shoppers read it: `€12.50`, `$3.05`, `12.50 CHF` for codes without a symbol here.
    pub fn format(self, currency: &str) -> String {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        let digits = group_thousands(whole);
        match currency_symbol(currency) {
            Some(symbol) => format!("{symbol}{digits}.{frac:02}"),
            None => format!("{digits}.{frac:02} {currency}"),
        }
    }
}

fn currency_symbol(code: &str) -> Option<&'static str> {
    match code {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        _ => None,
    }
}

fn group_thousands(mut n: u64) -> String {
    let mut groups = Vec::new();
    loop {
        if n < 1000 {
            groups.push(n.to_string());
            break;
        }
        groups.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_symbol_and_two_decimals() {
        assert_eq!(Cents(1250).format("EUR"), "€12.50");
        assert_eq!(Cents(5).format("USD"), "$0.05");
        assert_eq!(Cents(0).format("GBP"), "£0.00");
        assert_eq!(Cents(123_456_789).format("EUR"), "€1,234,567.89");
        assert_eq!(Cents(100_000).format("EUR"), "€1,000.00");
        assert_eq!(Cents(1999).format("CHF"), "19.99 CHF");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Cents(250).checked_times(4), Some(Cents(1000)));
        assert_eq!(Cents(u64::MAX).checked_times(2), None);
        assert_eq!(Cents(u64::MAX).checked_add(Cents(1)), None);
    }

    #[test]
    fn serializes_as_a_bare_number() {
        assert_eq!(serde_json::to_string(&Cents(42)).unwrap(), "42");
    }
}
