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

    /// A price as English-reading shoppers read it: `€12.50`, `$3.05`, `12.50 CHF` (a no-break space) for codes without a symbol
    /// here ([`Cents::format_in`] with [`Locale::En`]).
    pub fn format(self, currency: &str) -> String {
        self.format_in(currency, Locale::En)
    }

    /// A price as a shopper in `locale` reads it: `€1,234.50` (en), `1.234,50 €` (de), `1 234,50 €` (fr),
    /// `€ 1.234,50` (nl). The separators are what `Intl.NumberFormat` prints for these locales, so the server's
    /// rendering and every bundle's agree to the byte (one function, used on both sides).
    pub fn format_in(self, currency: &str, locale: Locale) -> String {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        let (group, decimal) = locale.separators();
        let digits = group_thousands(whole, group);
        let number = format!("{digits}{decimal}{frac:02}");
        let Some(symbol) = currency_symbol(currency) else {
            return format!("{number}\u{a0}{currency}");
        };
        match locale {
            Locale::En => format!("{symbol}{number}"),
            Locale::Nl => format!("{symbol}\u{a0}{number}"),
            Locale::De | Locale::Fr => format!("{number}\u{a0}{symbol}"),
        }
    }
}

/// The locales prices are written in: a small supported set, English when the browser asks for none of them.
/// Only money follows it; the page's words are English.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    En,
    De,
    Fr,
    Nl,
}

impl Locale {
    pub const ALL: [Locale; 4] = [Locale::En, Locale::De, Locale::Fr, Locale::Nl];

    /// Its language subtag (`de`).
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
            Locale::Fr => "fr",
            Locale::Nl => "nl",
        }
    }

    /// The supported locale an `Accept-Language` header prefers most (by `q`, then by order; a region such as
    /// `de-CH` counts as its language), or English. Malformed entries are skipped, never an error.
    pub fn negotiate(accept_language: &str) -> Locale {
        let mut best: Option<(u16, Locale)> = None;
        // At most a few dozen entries are worth reading; a longer header is someone else's problem.
        for entry in accept_language.split(',').take(32) {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let language = tag.split(['-', '_']).next().unwrap_or("");
            let Some(locale) = Locale::ALL.into_iter().find(|l| l.tag().eq_ignore_ascii_case(language)) else {
                continue;
            };
            let q = parts.find_map(|p| p.trim().strip_prefix("q=").map(parse_q)).unwrap_or(Some(1000));
            let Some(q) = q.filter(|q| *q > 0) else { continue };
            if best.is_none_or(|(held, _)| q > held) {
                best = Some((q, locale));
            }
        }
        best.map_or(Locale::En, |(_, l)| l)
    }

    /// (thousands, decimal) separators. French groups with a narrow no-break space, as `Intl` does.
    fn separators(self) -> (&'static str, &'static str) {
        match self {
            Locale::En => (",", "."),
            Locale::De | Locale::Nl => (".", ","),
            Locale::Fr => ("\u{202f}", ","),
        }
    }
}

/// A `q` value (`0`..`1`, up to three decimals) in thousandths; `None` when malformed.
fn parse_q(text: &str) -> Option<u16> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
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

fn group_thousands(mut n: u64, separator: &str) -> String {
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
    groups.join(separator)
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
        assert_eq!(Cents(1999).format("CHF"), "19.99\u{a0}CHF");
    }

    #[test]
    fn formats_in_each_locale_as_intl_does() {
        let amount = Cents(123_450);
        assert_eq!(amount.format_in("EUR", Locale::En), "€1,234.50");
        assert_eq!(amount.format_in("EUR", Locale::De), "1.234,50\u{a0}€");
        assert_eq!(amount.format_in("EUR", Locale::Fr), "1\u{202f}234,50\u{a0}€");
        assert_eq!(amount.format_in("EUR", Locale::Nl), "€\u{a0}1.234,50");
        assert_eq!(Cents(5).format_in("EUR", Locale::De), "0,05\u{a0}€");
        assert_eq!(Cents(123_456_789).format_in("USD", Locale::De), "1.234.567,89\u{a0}$");
        assert_eq!(Cents(1999).format_in("CHF", Locale::De), "19,99\u{a0}CHF");
        assert_eq!(amount.format("EUR"), amount.format_in("EUR", Locale::En));
    }

    #[test]
    fn negotiates_the_preferred_supported_locale() {
        assert_eq!(Locale::negotiate("de-DE,de;q=0.9,en;q=0.8"), Locale::De);
        assert_eq!(Locale::negotiate("en-US,en;q=0.9"), Locale::En);
        assert_eq!(Locale::negotiate("ja, fr-CA;q=0.5, nl;q=0.7"), Locale::Nl);
        assert_eq!(Locale::negotiate("ja, zh;q=0.9"), Locale::En, "none supported: English");
        assert_eq!(Locale::negotiate(""), Locale::En);
        assert_eq!(Locale::negotiate("fr;q=0, de;q=0.1"), Locale::De, "q=0 means not wanted");
        assert_eq!(Locale::negotiate("fr;q=2, de;q=banana, nl;q=0.3"), Locale::Nl, "malformed q skipped");
        assert_eq!(Locale::negotiate("DE_at"), Locale::De);
        assert_eq!(Locale::negotiate("*;q=0.5, fr"), Locale::Fr);
        assert_eq!(serde_json::to_string(&Locale::De).unwrap(), "\"de\"");
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
