//! What the bot says: stock and prices of the products a question names, from the catalog as it is now, and
//! a promise to pass anything else on.

use cartwheel_core::Product;

/// What it says when it cannot answer.
pub const PASS_ON: &str =
    "I can answer questions about stock and prices. I'll pass this on to the team — someone will answer here.";

/// Words that name no product by themselves.
const IGNORED: [&str; 8] = ["the", "and", "for", "with", "set", "of", "a", "an"];

/// The answer to `question`, with `products` (`None`: the catalog could not be read).
pub fn answer(question: &str, products: Option<&[Product]>) -> String {
    let words = words(question);
    let Some(products) = products else {
        return "I cannot see the shelves right now. I'll pass this on — someone will answer here.".to_owned();
    };
    let Some(product) = best_match(&words, products) else {
        return PASS_ON.to_owned();
    };
    let asks_price =
        words.iter().any(|w| ["price", "cost", "costs", "much", "expensive", "cheap"].contains(&w.as_str()));
    let asks_stock =
        words.iter().any(|w| ["stock", "available", "left", "have", "sold", "buy", "many"].contains(&w.as_str()));
    let price = product.price_cents.format(&product.currency);
    let stock = match product.stock {
        0 => format!("The {} is sold out right now.", product.name),
        n @ 1..=3 => format!("The {} is in stock, but only {n} left.", product.name),
        n => format!("The {} is in stock ({n} available).", product.name),
    };
    match (asks_price, asks_stock) {
        (true, false) => format!("The {} costs {price}.", product.name),
        (false, true) => stock,
        _ => format!("{stock} It costs {price}."),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The product whose name shares the most words with the question (at least one that names something).
fn best_match<'a>(words: &[String], products: &'a [Product]) -> Option<&'a Product> {
    products
        .iter()
        .map(|p| {
            let hits = self::words(&p.name)
                .iter()
                .filter(|w| {
                    !IGNORED.contains(&w.as_str())
                        && words.iter().any(|q| q == *w || q.trim_end_matches('s') == w.as_str())
                })
                .count();
            (hits, p)
        })
        .filter(|(hits, _)| *hits > 0)
        .max_by_key(|(hits, _)| *hits)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_core::{Cents, ProductId};

    fn product(id: &str, name: &str, stock: u32, cents: u64) -> Product {
        Product {
            id: ProductId::from(id),
            name: name.into(),
            description: String::new(),
            price_cents: Cents(cents),
            currency: "EUR".into(),
            stock,
            image: String::new(),
            revision: 0,
            epoch: Default::default(),
        }
    }

    #[test]
    fn answers_stock_and_price_of_the_product_named_and_passes_the_rest_on() {
        let shelf = [
            product("walnut-desk-lamp", "Walnut Desk Lamp", 3, 12_900),
            product("glass-carafe", "Glass Carafe", 40, 2_600),
            product("brass-pen", "Brass Pen", 0, 4_200),
        ];
        assert_eq!(
            answer("is the walnut lamp in stock?", Some(&shelf)),
            "The Walnut Desk Lamp is in stock, but only 3 left."
        );
        assert_eq!(answer("How much is the carafe?", Some(&shelf)), "The Glass Carafe costs €26.00.");
        assert_eq!(answer("Brass pens?", Some(&shelf)), "The Brass Pen is sold out right now. It costs €42.00.");
        assert_eq!(answer("Where is my parcel?", Some(&shelf)), PASS_ON);
        assert!(answer("the lamp", None).contains("pass this on"));
    }
}
