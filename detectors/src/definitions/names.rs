//! Look-alike tool names: a tool whose name imitates a tool of another server, so the
//! model calls the impostor. Three degrees, from most to least suspicious:
//!
//! - **homoglyph**: the names differ only by characters drawn alike (Cyrillic `а` for
//!   Latin `a`, `0` for `o`, `rn` for `m`, fullwidth forms);
//! - **typosquat**: one edit apart (insert, delete, substitute, swap) in names of eight
//!   or more characters, separators aside. Shorter names, and two edits, are too often
//!   honest neighbours (`get_user`/`set_user`, `LikeTweet`/`UnlikeTweet`,
//!   `ReadEmail`/`SendEmail`: eight such pairs among InjecAgent's 330 clean tools);
//! - **variant**: the same name up to case and separators (`send_email`, `sendEmail`).
//!
//! Names with confusable characters are suspect even with no counterpart yet.

/// How a name imitates another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Likeness {
    /// Same up to case and separators.
    Variant,
    /// A small edit apart.
    Typosquat,
    /// Same once look-alike characters are replaced.
    Homoglyph,
}

impl Likeness {
    /// Name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Likeness::Variant => "variant",
            Likeness::Typosquat => "typosquat",
            Likeness::Homoglyph => "homoglyph",
        }
    }
}

/// Characters drawn like a Latin letter, and that letter.
fn confusable(c: char) -> Option<char> {
    let latin = match c {
        'а' | 'А' | 'α' | 'Α' => 'a',
        'в' | 'В' | 'β' | 'Β' | 'Ь' => 'b',
        'с' | 'С' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'Е' | 'ε' | 'Ε' | 'ё' => 'e',
        'ɡ' => 'g',
        'һ' | 'Н' | 'Η' => 'h',
        'і' | 'І' | 'ι' | 'Ι' | 'ı' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' | 'κ' | 'Κ' => 'k',
        'ӏ' | 'Ӏ' | 'ⅼ' => 'l',
        'м' | 'М' | 'Μ' => 'm',
        'ո' | 'Ν' | 'η' => 'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' | 'օ' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' | 'τ' | 'Τ' => 't',
        'υ' | 'ս' => 'u',
        'ν' | 'ѵ' => 'v',
        'ԝ' | 'ѡ' => 'w',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'у' | 'У' | 'γ' | 'Υ' => 'y',
        'ᴢ' | 'Ζ' => 'z',
        // Fullwidth ASCII.
        '\u{ff01}'..='\u{ff5e}' => {
            return char::from_u32(c as u32 - 0xfee0).map(|a| a.to_ascii_lowercase());
        }
        _ => return None,
    };
    Some(latin)
}

/// Whether a name uses characters drawn like Latin letters (a name that is not plain
/// ASCII but reads as if it were).
pub fn confusable_chars(name: &str) -> Vec<char> {
    name.chars().filter(|&c| confusable(c).is_some()).collect()
}

/// Lowercase, no separators.
fn folded(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The name as it looks: look-alikes replaced by the letter they imitate.
fn skeleton(name: &str) -> String {
    let mapped: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .map(|c| match c {
            'I' | '1' | '|' => 'l',
            '0' => 'o',
            c => confusable(c).unwrap_or(c),
        })
        .flat_map(char::to_lowercase)
        .collect();
    mapped.replace("rn", "m").replace("vv", "w")
}

/// Optimal string alignment distance, giving up past `limit`.
fn edit_distance(a: &[char], b: &[char], limit: usize) -> usize {
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(prev2[j - 2] + 1);
            }
            cur[j] = best;
        }
        if cur.iter().min().is_some_and(|&m| m > limit) {
            return limit + 1;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How `name` imitates `other`, if it does. Identical names are not look-alikes.
pub fn likeness(name: &str, other: &str) -> Option<Likeness> {
    if name == other {
        return None;
    }
    let (a, b) = (folded(name), folded(other));
    if a == b {
        return Some(Likeness::Variant);
    }
    if skeleton(name) == skeleton(other) {
        return Some(Likeness::Homoglyph);
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let shorter = a.len().min(b.len());
    if shorter < 8 {
        return None;
    }
    (edit_distance(&a, &b, 1) <= 1).then_some(Likeness::Typosquat)
}

/// The share of distinct words two texts have in common (Jaccard, lowercase
/// alphanumeric words): near 1 for a description copied with a word changed. Texts of
/// fewer than three distinct words share nothing worth the name (0).
pub fn word_overlap(a: &str, b: &str) -> f64 {
    use std::collections::BTreeSet;
    let words = |t: &str| -> BTreeSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (a, b) = (words(a), words(b));
    if a.len() < 3 || b.len() < 3 {
        return 0.0;
    }
    let union = a.union(&b).count();
    a.intersection(&b).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homoglyphs_typosquats_and_variants() {
        let cases = [
            ("sеnd_email", "send_email", Some(Likeness::Homoglyph)), // Cyrillic е
            ("send_emai1", "send_email", Some(Likeness::Homoglyph)),
            ("get_rnessages", "get_messages", Some(Likeness::Homoglyph)),
            ("ｓｅｎｄ_email", "send_email", Some(Likeness::Homoglyph)),
            ("send_emial", "send_email", Some(Likeness::Typosquat)),
            ("send_emails", "send_email", Some(Likeness::Typosquat)),
            ("sendEmail", "send_email", Some(Likeness::Variant)),
            ("read_file", "read_file", None),
            ("read_file", "write_file", None),
            ("get_user", "set_user", None), // seven characters: too short to call a typo
            ("list", "lest", None),
            ("search_emails", "search_files", None),
            (
                "create_calendar_event",
                "create_calendar_events",
                Some(Likeness::Typosquat),
            ),
        ];
        for (name, other, expected) in cases {
            assert_eq!(likeness(name, other), expected, "{name} vs {other}");
        }
    }

    #[test]
    fn word_overlap_finds_near_copies() {
        let a = "Create a new commit on a repository with the staged changes";
        assert!(
            word_overlap(
                a,
                "Create a new commit on a repository with the staged changes now"
            ) > 0.9
        );
        assert!(word_overlap(a, "Get details for a commit from a GitHub repository") < 0.4);
        assert_eq!(word_overlap("d", "d"), 0.0, "too short to be a copy");
    }

    #[test]
    fn confusable_characters_are_listed() {
        assert_eq!(confusable_chars("раy"), vec!['р', 'а']);
        assert!(confusable_chars("send_email").is_empty());
        assert!(confusable_chars("日本語").is_empty());
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
                3,
            )
        };
        assert_eq!(d("abcd", "abdc"), 1);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("abc", "abcdefgh"), 4);
    }
}
