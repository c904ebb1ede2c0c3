//! A plan's pattern, matched the cheapest way that is exact for it.
//!
//! Plans use patterns for ids and codes: `^s_[0-9a-f]{16}$`, `^[A-Z0-9-]+$`, `^[a-z][a-z0-9_-]{0,63}$`.
//! Each of these is, once parsed, an anchored run of **steps**, each a set of ASCII bytes repeated between
//! a minimum and a maximum number of times (a literal is a step per byte). When every step that can vary
//! in length is the last, or is followed by a step that takes at least one byte and none of its bytes, a
//! match can only take the longest run each step allows, so one pass over the value with a bit test per
//! byte decides it: no automaton, no search set-up, no per-call cache. That is most of what `Regex::is_match` costs on a 20-byte id, and it ran
//! on every event (docs/architecture.md: one walk over an event's properties checks them and the tracking plan).
//!
//! Any other pattern (alternation, Unicode classes, unanchored, a variable step followed by one it
//! overlaps) is matched by the `regex` crate, as before. Both give the same answer on every value: a
//! property test compares them.

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// A compiled pattern.
pub(super) enum Pattern {
    /// Anchored steps, matched in one greedy pass.
    Steps(StepPattern),
    /// Anything else.
    Regex(Regex),
}

impl Pattern {
    /// `regex` (compiled from `text`) as the cheapest exact matcher.
    pub(super) fn new(text: &str, regex: Regex) -> Self {
        match StepPattern::parse(text) {
            Some(steps) => Pattern::Steps(steps),
            None => Pattern::Regex(regex),
        }
    }

    /// Whether `text` matches, as `Regex::is_match` says.
    #[inline]
    pub(super) fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Steps(steps) => steps.is_match(text.as_bytes()),
            Pattern::Regex(regex) => regex.is_match(text),
        }
    }
}

/// A set of bytes, a bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert_range(&mut self, start: u8, end: u8) {
        for byte in start..=end {
            self.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
        }
    }

    #[inline]
    fn contains(&self, byte: u8) -> bool {
        (self.0[usize::from(byte >> 6)] >> (byte & 63)) & 1 == 1
    }

    fn overlaps(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(mine, theirs)| mine & theirs != 0)
    }
}

/// One step: a byte of `bytes`, at least `min` and at most `max` times in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    bytes: ByteSet,
    min: u32,
    max: u32,
}

/// A pattern of [`Step`]s anchored at the start, and at the end when `to_end`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StepPattern {
    steps: Vec<Step>,
    to_end: bool,
}

impl StepPattern {
    /// The steps of `pattern` when it is of that shape and greedy matching is exact for it (module doc);
    /// `None` otherwise, including when it does not parse.
    pub(super) fn parse(pattern: &str) -> Option<Self> {
        // The `regex` crate's own parser with its defaults, so the meaning is the one `Regex` gives.
        let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
        let mut items = Vec::new();
        flatten(&hir, &mut items);
        let (first, rest) = items.split_first()?;
        if *first != Item::Start {
            return None;
        }
        let (to_end, body) = match rest.split_last() {
            Some((Item::End, body)) => (true, body),
            _ => (false, rest),
        };
        let steps = body
            .iter()
            .map(|item| match item {
                Item::Step(step) => Some(*step),
                Item::Start | Item::End | Item::Other => None,
            })
            .collect::<Option<Vec<Step>>>()?;
        // Greedy is exact when every step that can vary in length is the last, or is followed by a step
        // that takes at least one byte, none of them its own (module doc).
        let greedy_is_exact = steps.windows(2).all(|pair| {
            let (step, next) = (pair[0], pair[1]);
            step.min == step.max || (next.min >= 1 && !step.bytes.overlaps(&next.bytes))
        });
        greedy_is_exact.then_some(Self { steps, to_end })
    }

    /// Whether `text` matches: each step takes the longest run it can, and must take its minimum.
    #[inline]
    fn is_match(&self, text: &[u8]) -> bool {
        let mut at = 0usize;
        for step in &self.steps {
            let started = at;
            let limit = text.len().min(started.saturating_add(step.max as usize));
            while at < limit && step.bytes.contains(text[at]) {
                at += 1;
            }
            if at - started < step.min as usize {
                return false;
            }
        }
        !self.to_end || at == text.len()
    }
}

/// What a pattern is made of, flattened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Start,
    End,
    Step(Step),
    /// Anything steps cannot say.
    Other,
}

/// `hir` as a sequence of items (a concatenation and groups flattened, a literal a step per byte).
fn flatten(hir: &Hir, items: &mut Vec<Item>) {
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Literal(literal) => items.extend(literal.0.iter().map(|&byte| {
            let mut bytes = ByteSet::default();
            bytes.insert_range(byte, byte);
            Item::Step(Step { bytes, min: 1, max: 1 })
        })),
        HirKind::Class(class) => {
            items.push(ascii_set(class).map_or(Item::Other, |bytes| Item::Step(Step { bytes, min: 1, max: 1 })))
        }
        HirKind::Look(Look::Start) => items.push(Item::Start),
        HirKind::Look(Look::End) => items.push(Item::End),
        HirKind::Look(_) => items.push(Item::Other),
        HirKind::Repetition(repetition) => {
            let bytes = match repetition.sub.kind() {
                HirKind::Class(class) => ascii_set(class),
                HirKind::Literal(literal) if literal.0.len() == 1 => {
                    let mut bytes = ByteSet::default();
                    bytes.insert_range(literal.0[0], literal.0[0]);
                    Some(bytes)
                }
                _ => None,
            };
            items.push(bytes.map_or(Item::Other, |bytes| {
                Item::Step(Step { bytes, min: repetition.min, max: repetition.max.unwrap_or(u32::MAX) })
            }));
        }
        HirKind::Capture(capture) => flatten(&capture.sub, items),
        HirKind::Concat(parts) => parts.iter().for_each(|part| flatten(part, items)),
        HirKind::Alternation(_) => items.push(Item::Other),
    }
}

/// The bytes of a class of ASCII characters; `None` when it has any other (a value's non-ASCII
/// characters are several bytes each, which a byte step cannot say).
fn ascii_set(class: &Class) -> Option<ByteSet> {
    let mut bytes = ByteSet::default();
    match class {
        Class::Unicode(class) => {
            for range in class.ranges() {
                let (start, end) = (u32::from(range.start()), u32::from(range.end()));
                if end > 0x7F {
                    return None;
                }
                bytes.insert_range(start as u8, end as u8);
            }
        }
        Class::Bytes(class) => {
            for range in class.ranges() {
                if range.end() > 0x7F {
                    return None;
                }
                bytes.insert_range(range.start(), range.end());
            }
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn id_patterns_are_steps_and_the_rest_are_left_to_regex() {
        for pattern in [
            "^s_[0-9a-f]{16}$",
            "^[A-Z0-9-]+$",
            "^[a-z][a-z0-9_-]{0,63}$",
            "^ord-[0-9]{10}$",
            r"^ord-(?-u:\d){10}$",
            "^(?:vid_)[0-9]{11}$",
            r"\A[A-Z]{3}\z",
            "^E[0-9]{4}",
            "^[a-z]+_[0-9]+$",
        ] {
            assert!(StepPattern::parse(pattern).is_some(), "{pattern}");
        }
        for pattern in [
            "[0-9]+",         // not anchored at the start
            "^[a-z]*a$",      // a varying step followed by one it overlaps
            "^[a-z]+[0-9]?$", // a varying step followed by an optional one
            "^(ab|cd)$",
            "^\\w+$",        // Unicode word characters
            r"^ord-\d{10}$", // Unicode digits
            "^é+$",          // a literal of two bytes repeated
            "^a\\b",
            "(?m)^a$",
        ] {
            assert!(StepPattern::parse(pattern).is_none(), "{pattern}");
        }
    }

    #[test]
    fn steps_match_as_regex_does_on_the_bench_patterns() {
        let cases = [
            ("^s_[0-9a-f]{16}$", "s_0123456789abcdef", true),
            ("^s_[0-9a-f]{16}$", "s_0123456789abcde", false),
            ("^s_[0-9a-f]{16}$", "s_0123456789abcdef0", false),
            ("^s_[0-9a-f]{16}$", "s_0123456789ABCDEF", false),
            ("^[A-Z0-9-]+$", "SKU-00042", true),
            ("^[A-Z0-9-]+$", "", false),
            ("^[A-Z0-9-]+$", "sku-lowercase", false),
            ("^[a-z][a-z0-9_-]{0,63}$", "buy-button", true),
            ("^[a-z][a-z0-9_-]{0,63}$", &"a".repeat(65), false),
            ("^[a-z][a-z0-9_-]{0,63}$", &"a".repeat(64), true),
            ("^E[0-9]{4}", "E1234 and more", true),
            ("^E[0-9]{4}", "E123", false),
        ];
        for (pattern, text, expected) in cases {
            let steps = StepPattern::parse(pattern).unwrap();
            assert_eq!(Regex::new(pattern).unwrap().is_match(text), expected, "{pattern} {text:?}");
            assert_eq!(steps.is_match(text.as_bytes()), expected, "{pattern} {text:?}");
        }
    }

    /// Patterns built from the pieces id patterns use: anchors, literals, ASCII classes, repetitions.
    fn pattern() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("a".to_owned()),
            Just("-".to_owned()),
            Just("[a-c]".to_owned()),
            Just("[0-9]".to_owned()),
            Just("[a0-]".to_owned()),
            Just("(?:ab)".to_owned()),
            Just("é".to_owned()),
            Just("[^a]".to_owned()),
            Just(".".to_owned()),
        ];
        let repeat = prop_oneof![
            Just(String::new()),
            Just("?".to_owned()),
            Just("+".to_owned()),
            Just("*".to_owned()),
            Just("{2}".to_owned()),
            Just("{0,3}".to_owned()),
            Just("{1,2}".to_owned()),
            Just("{2,}".to_owned()),
        ];
        (any::<bool>(), prop::collection::vec((piece, repeat), 0..5), any::<bool>()).prop_map(|(start, pieces, end)| {
            let body: String = pieces.into_iter().map(|(piece, repeat)| piece + &repeat).collect();
            format!("{}{body}{}", if start { "^" } else { "" }, if end { "$" } else { "" })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Whenever a pattern is taken as steps, its steps and the `regex` crate agree on every value.
        #[test]
        fn steps_agree_with_regex(pattern in pattern(), texts in prop::collection::vec("[a-c0-9é-]{0,8}", 1..24)) {
            let regex = Regex::new(&pattern).unwrap();
            if let Some(steps) = StepPattern::parse(&pattern) {
                for text in &texts {
                    prop_assert_eq!(steps.is_match(text.as_bytes()), regex.is_match(text), "{} on {:?}", pattern, text);
                }
            }
        }
    }
}
