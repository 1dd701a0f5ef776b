//! Shell-style globs (`*` any run, `?` one character) for names in policy rules.
//! Names are short, so a backtracking matcher on chars is fast enough and keeps the
//! detector free of another dependency.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    /// The pattern has no wildcard: compare directly.
    literal: Option<String>,
    case_insensitive: bool,
}

impl Glob {
    /// A case-sensitive glob.
    pub fn new(pattern: &str) -> Self {
        Self::build(pattern, false)
    }

    /// A glob that ignores case (for values such as email addresses and hosts).
    pub fn new_case_insensitive(pattern: &str) -> Self {
        Self::build(&pattern.to_lowercase(), true)
    }

    fn build(pattern: &str, case_insensitive: bool) -> Self {
        let literal = (!pattern.contains(['*', '?'])).then(|| pattern.to_string());
        Glob {
            pattern: pattern.chars().collect(),
            literal,
            case_insensitive,
        }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        if self.case_insensitive && text.chars().any(char::is_uppercase) {
            return self.matches_exact(&text.to_lowercase());
        }
        self.matches_exact(text)
    }

    fn matches_exact(&self, text: &str) -> bool {
        if let Some(lit) = &self.literal {
            return lit == text;
        }
        if self.pattern == ['*'] {
            return true;
        }
        let text: Vec<char> = text.chars().collect();
        let (p, t) = (&self.pattern, &text);
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

/// A list of globs; empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct GlobSet(Vec<Glob>);

impl GlobSet {
    /// Case-sensitive globs.
    pub fn new(patterns: &[String]) -> Self {
        GlobSet(patterns.iter().map(|p| Glob::new(p)).collect())
    }

    /// Globs that ignore case.
    pub fn new_case_insensitive(patterns: &[String]) -> Self {
        GlobSet(
            patterns
                .iter()
                .map(|p| Glob::new_case_insensitive(p))
                .collect(),
        )
    }

    /// Whether the list is empty (matches anything).
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `value` matches one glob; an empty list matches any value, and a
    /// non-empty list never matches a missing one.
    pub fn matches(&self, value: Option<&str>) -> bool {
        self.0.is_empty() || value.is_some_and(|v| self.0.iter().any(|g| g.matches(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("*", "anything", true),
            ("send_*", "send_email", true),
            ("send_*", "resend_email", false),
            ("*_file", "read_file", true),
            ("get_?ser", "get_user", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*@corp.example", "ann@corp.example", true),
            ("**", "", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn case_insensitive_globs_fold_both_sides() {
        let g = Glob::new_case_insensitive("*@Evil.IO");
        assert!(g.matches("x@EVIL.io"));
        assert!(!Glob::new("*@Evil.IO").matches("x@evil.io"));
    }

    #[test]
    fn empty_sets_match_anything_but_lists_need_a_value() {
        assert!(GlobSet::default().matches(None));
        let set = GlobSet::new(&["support-*".to_string()]);
        assert!(set.matches(Some("support-bot")));
        assert!(!set.matches(None));
    }
}
