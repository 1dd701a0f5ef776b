//! Checksums and structure checks that separate real card numbers, IBANs and JWTs from
//! strings that only look like them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Luhn (ISO/IEC 7812) check over decimal digits (values 0 to 9).
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// IBAN lengths by country (SWIFT IBAN registry); other countries need 15 to 34.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"RO", 24),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"UA", 29),
];

/// ISO 13616: country length and mod-97 of the rearranged number equal to 1.
/// `compact` holds uppercase letters and digits only.
pub fn iban_valid(compact: &[u8]) -> bool {
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    let country = [compact[0], compact[1]];
    if let Some((_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| **c == country)
        && compact.len() != *len
    {
        return false;
    }
    let mut remainder: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        remainder = match b {
            b'0'..=b'9' => (remainder * 10 + (b - b'0') as u32) % 97,
            b'A'..=b'Z' => (remainder * 100 + (b - b'A' + 10) as u32) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

/// A JWT header: base64url of a JSON object with a string `alg`.
pub fn jwt_header_valid(segment: &[u8]) -> bool {
    let Ok(decoded) = URL_SAFE_NO_PAD.decode(segment) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&decoded)
        .is_ok_and(|v| v.get("alg").is_some_and(serde_json::Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn luhn_accepts_test_cards_and_rejects_single_digit_errors() {
        for card in [
            "4111111111111111",
            "5500000000000004",
            "340000000000009",
            "6011000000000004",
        ] {
            assert!(luhn_valid(&digits(card)), "{card}");
            let mut d = digits(card);
            d[3] = (d[3] + 1) % 10;
            assert!(!luhn_valid(&d), "{card} with one digit changed");
        }
    }

    #[test]
    fn iban_checks_checksum_and_country_length() {
        assert!(iban_valid(b"GB29NWBK60161331926819"));
        assert!(iban_valid(b"DE89370400440532013000"));
        assert!(iban_valid(b"CH9300762011623852957"));
        assert!(!iban_valid(b"GB28NWBK60161331926819"), "checksum");
        assert!(!iban_valid(b"DE8937040044053201300"), "length for DE");
        assert!(!iban_valid(b"GB29NWBK6016133192681x"), "lowercase");
    }

    #[test]
    fn jwt_header_needs_json_with_alg() {
        assert!(jwt_header_valid(b"eyJhbGciOiJIUzI1NiJ9"));
        assert!(!jwt_header_valid(b"eyJub3RhbGciOjF9"));
        assert!(!jwt_header_valid(b"eyJ!!!"));
    }
}
