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
