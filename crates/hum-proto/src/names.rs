//! What a name people choose may contain: the one place where display names, server names and
//! channel names are checked, so the client refuses exactly what the relay refuses.
//!
//! A name is normalised to NFC (so "é" typed as `e` + U+0301 and as U+00E9 are the same name)
//! and then refused when it
//!
//! - is empty or longer than its limit (counted in Unicode scalar values, after NFC);
//! - starts or ends with whitespace;
//! - contains a control character (Cc), a bidirectional control (U+202A-202E, U+2066-2069,
//!   U+200E, U+200F, U+061C: they reorder the text around them, so "abc\u{202E}gpj.exe" shows as
//!   "abcexe.jpg"), an invisible format character (the rest of Cf: U+200B-200D, U+2060-2064,
//!   U+FEFF, U+00AD, tag characters, ...), a line or paragraph separator (U+2028, U+2029), a
//!   Hangul filler (U+115F, U+1160, U+3164, U+FFA0: they render as nothing) or a noncharacter;
//!   the one exception is U+200D (zero-width joiner) between two emoji, where it builds a single
//!   emoji such as 👩‍💻;
//! - has nothing visible: only whitespace, variation selectors, combining marks, U+034F or
//!   U+2800 (a blank braille cell);
//! - stacks more than [`MAX_COMBINING_MARKS`] combining marks on one character ("Zalgo" text
//!   that draws over the lines around it);
//! - mixes scripts inside one word (UTS #39 mixed-script detection over each whitespace-separated
//!   word): "Pаypal" with a Cyrillic "а" is refused, while "Ivan Иван" (one script per word),
//!   "Zoë", "東京タワー" and "Android版" (Latin with Han/Kana/Hangul, UTS #39's "highly
//!   restrictive" level) are accepted. Digits, punctuation and emoji belong to no script and never
//!   count as mixing.
//!
//! Refused rather than marked: a mixed-script word has no honest use that a space or a
//! single-script spelling does not serve, and refusing at the relay protects every client,
//! including ones that would not show a mark. What a per-name check cannot catch, two
//! *different* single-script names that look alike ("Ada" and the all-Cyrillic "Аԁа"), is left to the
//! client: [`skeleton`] gives both the same UTS #39 skeleton, so a client can mark a member or
//! friend whose name looks like another's (the [`UserId`](crate::UserId) is the identity; names
//! are not unique).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_script::Script;
use unicode_security::mixed_script::AugmentedScriptSet;

/// Most combining marks allowed on one base character (after NFC). Real text needs a few
/// (Vietnamese two, some Indic and Hebrew pointing three or four); "Zalgo" stacks dozens.
pub const MAX_COMBINING_MARKS: usize = 6;

/// Why a name was refused. The message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must be 1-{max} characters, got {got}")]
    Length { max: usize, got: usize },
    #[error("name must not start or end with whitespace")]
    Untrimmed,
    #[error("name must not contain control characters")]
    Control,
    #[error(
        "name must not contain bidirectional control characters (here {ch}): they reorder the text"
    )]
    Bidi { ch: CodePoint },
    #[error("name must not contain invisible or formatting characters (here {ch})")]
    Invisible { ch: CodePoint },
    #[error("name must contain something visible, not only spaces or invisible characters")]
    Blank,
    #[error("name stacks more than {max} combining marks on one character")]
    TooManyMarks { max: usize },
    #[error(
        "the word \"{word}\" mixes letters of different scripts (e.g. Latin and Cyrillic), which is how look-alike names are made; spell it in one script"
    )]
    MixedScript { word: String },
}

/// A character as `U+XXXX` in messages (the character itself may not show).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePoint(pub char);

impl std::fmt::Display for CodePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// Bidirectional formatting characters (UAX #9): embeddings, overrides, isolates, marks.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// General category Cf (format) as of Unicode 16, minus the bidi controls, plus the characters
/// that render as nothing although they are letters (Hangul fillers), line/paragraph separators
/// (Zl, Zp) and noncharacters.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{115F}' | '\u{1160}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200D}'
        | '\u{2028}' | '\u{2029}'
        | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FDD0}'..='\u{FDEF}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{FFFE}' | '\u{FFFF}'
        | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
    ) || (u32::from(c) & 0xFFFE) == 0xFFFE
}

/// Characters that draw nothing on their own but are allowed inside a name.
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || is_combining_mark(c)
        || matches!(c,
            '\u{034F}'
            | '\u{180B}'..='\u{180D}' | '\u{180F}'
            | '\u{2800}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{E0100}'..='\u{E01EF}'
        )
}

/// Emoji, roughly (the blocks that hold Extended_Pictographic characters), plus the emoji
/// modifiers and presentation selector that may sit before a zero-width joiner.
fn is_emoji_like(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2190}'..='\u{21FF}'
        | '\u{2300}'..='\u{23FF}'
        | '\u{2460}'..='\u{24FF}'
        | '\u{25A0}'..='\u{27BF}'
        | '\u{2900}'..='\u{297F}'
        | '\u{2B00}'..='\u{2BFF}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{FE0F}'
        | '\u{1F000}'..='\u{1FAFF}'
    )
}

/// True when `word` mixes scripts beyond what UTS #39 calls "highly restrictive" (one script,
/// or Latin with Han/Hiragana/Katakana, Han/Bopomofo or Han/Hangul).
pub fn mixes_scripts(word: &str) -> bool {
    if !AugmentedScriptSet::for_str(word).is_empty() {
        return false;
    }
    let mut without_latin = AugmentedScriptSet::default();
    for c in word.chars() {
        let set = AugmentedScriptSet::for_char(c);
        if !set.base.contains_script(Script::Latin) {
            without_latin.intersect_with(set);
        }
    }
    !(without_latin.kore || without_latin.hanb || without_latin.jpan)
}

/// The UTS #39 skeleton of a name: two names with the same skeleton look alike ("Ada" and
/// the all-Cyrillic "Аԁа", "rn" and "m"). Clients use it to mark a name that imitates another.
pub fn skeleton(name: &str) -> String {
    unicode_security::skeleton(name).collect()
}

/// Normalise `s` to NFC and check it (see the module doc). Returns the normalised name.
pub fn normalize_name(s: &str, max_chars: usize) -> Result<String, NameError> {
    let s: String = if unicode_normalization::is_nfc(s) {
        s.to_owned()
    } else {
        s.nfc().collect()
    };
    let n = s.chars().count();
    if n == 0 || n > max_chars {
        return Err(NameError::Length {
            max: max_chars,
            got: n,
        });
    }
    if s.trim() != s {
        return Err(NameError::Untrimmed);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut marks = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_control() {
            return Err(NameError::Control);
        }
        if is_bidi_control(c) {
            return Err(NameError::Bidi { ch: CodePoint(c) });
        }
        if is_invisible_format(c) {
            let joins_emoji = c == '\u{200D}'
                && i > 0
                && is_emoji_like(chars[i - 1])
                && chars.get(i + 1).is_some_and(|&n| is_emoji_like(n));
            if !joins_emoji {
                return Err(NameError::Invisible { ch: CodePoint(c) });
            }
        }
        if is_combining_mark(c) {
            marks += 1;
            if marks > MAX_COMBINING_MARKS {
                return Err(NameError::TooManyMarks {
                    max: MAX_COMBINING_MARKS,
                });
            }
        } else {
            marks = 0;
        }
    }
    if chars.iter().all(|&c| is_blank(c)) {
        return Err(NameError::Blank);
    }
    if let Some(word) = s.split_whitespace().find(|w| mixes_scripts(w)) {
        return Err(NameError::MixedScript {
            word: word.to_owned(),
        });
    }
    Ok(s)
}

/// A name read back from storage written by an older, laxer version: the forbidden characters
/// are dropped and the rest trimmed and cut to `max_chars`; if that still is not a valid name,
/// `None` (the caller picks a placeholder).
pub fn repair_name(s: &str, max_chars: usize) -> Option<String> {
    if let Ok(ok) = normalize_name(s, max_chars) {
        return Some(ok);
    }
    let kept: String = s
        .nfc()
        .filter(|&c| !c.is_control() && !is_bidi_control(c) && !is_invisible_format(c))
        .collect();
    let cut: String = kept.trim().chars().take(max_chars).collect();
    normalize_name(cut.trim(), max_chars).ok()
}

/// Longest handle, in Unicode scalar values (after NFC).
pub const HANDLE_MAX_CHARS: usize = 32;
/// Shortest handle.
pub const HANDLE_MIN_CHARS: usize = 2;

/// Handles nobody may take: they would pass for the relay or its staff. Compared by
/// [`handle_key`], so look-alikes and other cases are refused too.
pub const RESERVED_HANDLES: &[&str] = &[
    "admin",
    "administrator",
    "hum",
    "moderator",
    "mod",
    "relay",
    "root",
    "staff",
    "support",
    "system",
];

/// Why a handle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("handle: {0}")]
    Name(NameError),
    #[error("a handle must be {min}-{max} characters, got {got}")]
    Length { min: usize, max: usize, got: usize },
    #[error(
        "a handle may contain letters, digits and `_`, `.` or `-` (not {ch}); leave out the leading @"
    )]
    Character { ch: CodePoint },
    #[error("a handle must start and end with a letter or digit")]
    Edge,
    #[error("a handle must not have two of `_`, `.`, `-` in a row")]
    Separators,
    #[error("the handle `{0}` is reserved")]
    Reserved(String),
}

fn is_handle_separator(c: char) -> bool {
    matches!(c, '_' | '.' | '-')
}

/// Normalise and check a handle: one word of letters and digits (any script, one script per
/// handle as for names) with single `_`, `.` or `-` between them, 2-32 characters, none of
/// [`RESERVED_HANDLES`]. A leading `@` is how people write a handle, not part of it: the caller
/// strips it ([`strip_at`]). Returns the NFC form; its uniqueness key is [`handle_key`].
pub fn normalize_handle(s: &str) -> Result<String, HandleError> {
    let h = normalize_name(s, HANDLE_MAX_CHARS).map_err(|e| match e {
        NameError::Length { got, .. } => HandleError::Length {
            min: HANDLE_MIN_CHARS,
            max: HANDLE_MAX_CHARS,
            got,
        },
        other => HandleError::Name(other),
    })?;
    let chars: Vec<char> = h.chars().collect();
    if chars.len() < HANDLE_MIN_CHARS {
        return Err(HandleError::Length {
            min: HANDLE_MIN_CHARS,
            max: HANDLE_MAX_CHARS,
            got: chars.len(),
        });
    }
    for (i, &c) in chars.iter().enumerate() {
        let ok = c.is_alphanumeric()
            || is_handle_separator(c)
            || (i > 0 && is_combining_mark(c) && !is_handle_separator(chars[i - 1]));
        if !ok {
            return Err(HandleError::Character { ch: CodePoint(c) });
        }
    }
    // The loop above lets a combining mark follow only a letter or digit, so a last mark is fine.
    let first_ok = chars[0].is_alphanumeric();
    let last = chars[chars.len() - 1];
    if !first_ok || is_handle_separator(last) {
        return Err(HandleError::Edge);
    }
    if chars
        .windows(2)
        .any(|w| is_handle_separator(w[0]) && is_handle_separator(w[1]))
    {
        return Err(HandleError::Separators);
    }
    let key = handle_key(&h);
    if RESERVED_HANDLES.iter().any(|r| handle_key(r) == key) {
        return Err(HandleError::Reserved(h));
    }
    Ok(h)
}

/// `@ada` -> `ada`: what people type, without the one leading `@`.
pub fn strip_at(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('@').unwrap_or(s)
}

/// The key under which a handle is unique: lower case, then the UTS #39 skeleton, then lower
/// case again (the skeleton maps some characters to capitals, e.g. `0` to `O`). So `Ada`, `ADA`,
/// the all-Cyrillic `Аԁа`, `ada` and `αda`... share one key, as do `rn` and `m`, `l`, `I` and
/// `1`: whoever holds one holds them all, and a look-alike of a handle cannot be registered.
/// Case folding is `to_lowercase` (not full Unicode case folding: `ß` and `ss` stay apart).
pub fn handle_key(handle: &str) -> String {
    let lower = handle.to_lowercase();
    skeleton(&lower).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        normalize_name(s, 32).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }
    fn no(s: &str) -> NameError {
        normalize_name(s, 32).expect_err(s)
    }

    #[test]
    fn ordinary_names_pass_unchanged() {
        for s in [
            "Ada",
            "Ada Lovelace",
            "Zoë",
            "Łukasz",
            "Иван",
            "Ivan Иван",
            "Ελένη",
            "東京タワー",
            "Android版",
            "김민준",
            "محمد",
            "שלום",
            "Nguyễn Văn An",
            "user-3b6a27bc",
            "🎧 DJ Ada",
            "👩‍💻 coder",
            "❤️ love",
            "R2-D2 (droid)",
            "a",
        ] {
            assert_eq!(ok(s), s);
        }
    }

    #[test]
    fn names_are_nfc() {
        assert_eq!(ok("Zoe\u{0308}"), "Zoë");
        assert_eq!(ok("e\u{0301}"), "\u{00E9}");
        // Length counts after normalisation.
        assert!(normalize_name(&"e\u{0301}".repeat(32), 32).is_ok());
    }

    #[test]
    fn bidi_controls_are_refused() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            let e = no(&format!("abc{c}gpj.exe"));
            assert_eq!(e, NameError::Bidi { ch: CodePoint(c) });
        }
        assert!(no("x\u{202E}y").to_string().contains("U+202E"));
    }

    #[test]
    fn invisible_and_format_characters_are_refused() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{115F}',
            '\u{FFA0}',
            '\u{E0041}',
            '\u{FFFE}',
            '\u{1FFFF}',
        ] {
            assert_eq!(
                no(&format!("Ad{c}a")),
                NameError::Invisible { ch: CodePoint(c) },
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(no("A\nda"), NameError::Control);
        assert_eq!(no("A\u{7F}da"), NameError::Control);
        // A joiner only between two emoji.
        assert!(normalize_name("a\u{200D}b", 32).is_err());
        assert!(normalize_name("\u{1F469}\u{200D}", 32).is_err());
    }

    #[test]
    fn names_of_nothing_visible_are_refused() {
        assert!(matches!(no("\u{200B}"), NameError::Invisible { .. }));
        assert!(matches!(
            no("\u{FEFF}\u{200B}"),
            NameError::Invisible { .. }
        ));
        assert_eq!(no(" "), NameError::Untrimmed);
        assert_eq!(no("\u{2800}"), NameError::Blank);
        assert_eq!(no("\u{2800}\u{3000}\u{2800}"), NameError::Blank);
        assert_eq!(no("\u{0301}\u{0301}"), NameError::Blank);
        assert_eq!(no("\u{FE0F}"), NameError::Blank);
        assert_eq!(no(""), NameError::Length { max: 32, got: 0 });
    }

    #[test]
    fn zalgo_is_refused() {
        assert!(normalize_name(&format!("a{}", "\u{0301}".repeat(6)), 32).is_ok());
        assert_eq!(
            no(&format!("a{}", "\u{0336}".repeat(7))),
            NameError::TooManyMarks { max: 6 }
        );
    }

    #[test]
    fn mixed_script_words_are_refused() {
        // Latin "P", Cyrillic "а" (U+0430), Latin "ypal".
        assert_eq!(
            no("P\u{0430}ypal"),
            NameError::MixedScript {
                word: "P\u{0430}ypal".into()
            }
        );
        assert!(matches!(
            no("Support Hum\u{0455}"),
            NameError::MixedScript { .. }
        ));
        assert!(matches!(no("\u{0391}da"), NameError::MixedScript { .. })); // Greek Alpha + Latin
        assert!(!mixes_scripts("Ivan"));
        assert!(!mixes_scripts("Иван"));
        assert!(!mixes_scripts("Android版"));
        assert!(!mixes_scripts("日本語ひらがな"));
        assert!(!mixes_scripts("한국어漢字"));
        assert!(!mixes_scripts("R2-D2"));
    }

    #[test]
    fn look_alike_names_share_a_skeleton() {
        // "Ada" and "Аԁа" (all Cyrillic: U+0410, U+0501, U+0430): each one script, so both
        // are valid names...
        let fake = "\u{0410}\u{0501}\u{0430}";
        assert_eq!(ok(fake), fake);
        // ...and a client can tell they look the same.
        assert_eq!(skeleton("Ada"), skeleton(fake));
        assert_ne!(skeleton("Ada"), skeleton("Eve"));
    }

    #[test]
    fn handles_are_one_word_of_letters_and_digits() {
        for h in [
            "ada",
            "Ada_L",
            "ada.lovelace",
            "x-1",
            "zoë",
            "иван",
            "東京",
            "a1",
        ] {
            assert_eq!(normalize_handle(h).as_deref(), Ok(h), "{h:?}");
        }
        // NFD input comes back NFC.
        assert_eq!(normalize_handle("zoe\u{0308}").as_deref(), Ok("zoë"));
        assert!(matches!(
            normalize_handle("a"),
            Err(HandleError::Length { got: 1, .. })
        ));
        assert!(matches!(
            normalize_handle(&"a".repeat(33)),
            Err(HandleError::Length { got: 33, .. })
        ));
        assert!(matches!(
            normalize_handle(""),
            Err(HandleError::Length { .. })
        ));
        for bad in ["@ada", "ada lovelace", "ada!", "ada😀", "a/b"] {
            assert!(
                matches!(normalize_handle(bad), Err(HandleError::Character { .. })),
                "{bad:?}: {:?}",
                normalize_handle(bad)
            );
        }
        for bad in ["_ada", "ada.", "-ada"] {
            assert_eq!(normalize_handle(bad), Err(HandleError::Edge), "{bad:?}");
        }
        assert_eq!(normalize_handle("ada__l"), Err(HandleError::Separators));
        // The names rules still apply: invisible characters, mixed scripts.
        assert!(matches!(
            normalize_handle("ad\u{200B}a"),
            Err(HandleError::Name(NameError::Invisible { .. }))
        ));
        assert!(matches!(
            normalize_handle("p\u{0430}ypal"),
            Err(HandleError::Name(NameError::MixedScript { .. }))
        ));
        assert!(matches!(
            normalize_handle("Admin"),
            Err(HandleError::Reserved(_))
        ));
        assert!(matches!(
            normalize_handle("supp0rt"),
            Err(HandleError::Reserved(_))
        ));
        assert_eq!(strip_at(" @ada "), "ada");
        assert_eq!(strip_at("ada"), "ada");
    }

    #[test]
    fn handle_keys_fold_case_and_look_alikes() {
        let key = handle_key("ada");
        assert_eq!(handle_key("ADA"), key);
        assert_eq!(handle_key("Ada"), key);
        // All-Cyrillic "Аԁа" is a valid handle on its own but holds the same key.
        let fake = "\u{0410}\u{0501}\u{0430}";
        assert_eq!(normalize_handle(fake).as_deref(), Ok(fake));
        assert_eq!(handle_key(fake), key);
        assert_eq!(handle_key("b0b"), handle_key("bob"));
        assert_eq!(handle_key("rn"), handle_key("m"));
        assert_ne!(handle_key("ada"), handle_key("eve"));
    }

    #[test]
    fn stored_names_from_older_relays_are_repaired() {
        assert_eq!(repair_name("Ada", 32).as_deref(), Some("Ada"));
        assert_eq!(
            repair_name("\u{202E}Ada\u{200B}", 32).as_deref(),
            Some("Ada")
        );
        assert_eq!(repair_name(" Ada ", 32).as_deref(), Some("Ada"));
        assert_eq!(repair_name("\u{200B}\u{FEFF}", 32), None);
        assert_eq!(repair_name(&"x".repeat(40), 32).map(|s| s.len()), Some(32));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Strings biased towards the characters the rules are about.
    fn tricky() -> impl Strategy<Value = String> {
        let interesting = prop::sample::select(vec![
            'a',
            'A',
            'z',
            ' ',
            '-',
            '\u{00E9}',
            '\u{0301}',
            '\u{0430}',
            '\u{0410}',
            '\u{0391}',
            '\u{6771}',
            '\u{30BF}',
            '\u{D55C}',
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{200D}',
            '\u{FEFF}',
            '\u{2028}',
            '\u{3164}',
            '\u{2800}',
            '\u{3000}',
            '\u{FE0F}',
            '\u{1F469}',
            '\u{1F4BB}',
            '\n',
            '\u{E0041}',
            '\u{00AD}',
        ]);
        prop::collection::vec(prop_oneof![interesting, any::<char>()], 0..40)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Whatever the input: never a panic; an accepted name is NFC, within its length,
        /// trimmed, free of controls, bidi and format characters (except an emoji joiner), has
        /// something visible, and is accepted again unchanged (normalising is idempotent).
        #[test]
        fn accepted_names_keep_the_rules(s in tricky()) {
            if let Ok(n) = normalize_name(&s, 32) {
                prop_assert!(unicode_normalization::is_nfc(&n));
                let count = n.chars().count();
                prop_assert!((1..=32).contains(&count));
                prop_assert_eq!(n.trim(), n.as_str());
                prop_assert!(!n.chars().any(|c| c.is_control() || is_bidi_control(c)));
                const ZWJ: char = '\u{200D}';
                prop_assert!(!n.chars().any(|c| is_invisible_format(c) && c != ZWJ), "format character in {:?}", n);
                prop_assert!(!n.chars().all(is_blank));
                prop_assert_eq!(normalize_name(&n, 32), Ok(n.clone()));
            }
            if let Some(r) = repair_name(&s, 32) {
                prop_assert_eq!(normalize_name(&r, 32), Ok(r.clone()));
            }
        }

        /// An accepted handle is an accepted name without whitespace, is accepted again
        /// unchanged, and its key is stable under re-normalising and case changes of ASCII.
        #[test]
        fn accepted_handles_keep_the_rules(s in tricky()) {
            if let Ok(h) = normalize_handle(&s) {
                prop_assert_eq!(normalize_name(&h, HANDLE_MAX_CHARS), Ok(h.clone()));
                prop_assert!(!h.chars().any(char::is_whitespace));
                prop_assert_eq!(normalize_handle(&h), Ok(h.clone()));
                prop_assert_eq!(handle_key(&h.to_ascii_uppercase()), handle_key(&h));
            }
        }
    }
}
