//! The built-in training corpus: a collection of short original stories written for this
//! project (no download, no license questions), used when `scratchgpt train` gets no `--data`.

/// About 20 KB of English prose.
pub const DEFAULT_CORPUS: &str = include_str!("../corpus/default.txt");

/// Where the book's short story `the-verdict.txt` sits beside this checkout (in
/// `../shared/data/`, not part of the project), found from any working directory.
pub const THE_VERDICT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/the-verdict.txt"
);

/// The book's `the-verdict.txt` for the chapter examples, or `None` when it is not beside
/// this checkout (then the book's numbers cannot be reproduced).
pub fn the_verdict() -> Option<String> {
    std::fs::read_to_string(THE_VERDICT_PATH).ok()
}

/// The text a chapter example works on: the book's story, or, when it is missing, the
/// built-in corpus with a notice on stderr (the numbers printed are then not the book's).
pub fn the_verdict_or_notice() -> String {
    the_verdict().unwrap_or_else(|| {
        eprintln!(
            "note: {THE_VERDICT_PATH} is missing, so the built-in corpus is used instead and the numbers printed are not the book's"
        );
        DEFAULT_CORPUS.to_string()
    })
}

/// The sentences of `text` that are 25 to 200 bytes long, whitespace folded to single spaces:
/// a sentence ends at `.`, `!` or `?` followed by a space or the end. The units the chapter-6
/// example and the fine-tuning tests classify (The Verdict's sentences against the stories').
pub fn sentences(text: &str) -> Vec<String> {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let bytes = folded.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..bytes.len() {
        let ends = matches!(bytes[i], b'.' | b'!' | b'?')
            && (i + 1 == bytes.len() || bytes[i + 1] == b' ');
        if ends {
            let s = folded[start..=i].trim();
            if (25..=200).contains(&s.len()) {
                out.push(s.to_string());
            }
            start = i + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sentences_end_at_a_stop_before_a_space_and_keep_25_to_200_bytes() {
        let text = "Too short. This one is long enough to count, surely!\n  And  this one: \
                    a.b.c stays inside it? Yes.";
        assert_eq!(
            super::sentences(text),
            [
                "This one is long enough to count, surely!",
                "And this one: a.b.c stays inside it?"
            ]
        );
    }
}
