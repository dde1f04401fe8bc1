//! Book chapter 7: instruction fine-tuning — the Alpaca prompt template, the book's split,
//! batches collated with padding and ignored targets, and why an ignored target changes
//! nothing in the loss.
//!
//! `cargo run --release --example ch07_instruction`
//!
//! The fine-tuning run itself (GPT-2 medium in the book, on its 1,100 instructions) is the
//! command line's `scratchgpt finetune instruct --checkpoint gpt2-medium --data
//! instruction-data.json`, and talking to the result is `scratchgpt chat` (README,
//! "Fine-tuning").

use tensor::ops::cross_entropy::IGNORE_INDEX;
use tensor::Tensor;
use train::instruction::{collate, format_input, format_response, split, InstructionEntry};
use train::Tokenizer;

/// GPT-2's `<|endoftext|>`, the book's padding token.
const PAD: usize = 50256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    train::cli::check_example_args(&[]);
    // 7.2 the prompt template, on the book's entry 50
    let entry = book_entry();
    println!(
        "7.2  the book's entry 50 as the model sees it:\n\n{}{}\n",
        format_input(&entry),
        format_response(&entry.output)
    );
    let entries = vec![entry.clone(); 1100];
    let (train, test, val) = split(&entries);
    println!(
        "     1,100 entries split 85/10/5: {} training, {} test, {} validation",
        train.len(),
        test.len(),
        val.len()
    );
    let tok = Tokenizer::gpt2()?;
    let prompt = tok.encode(&format_input(&entry)).len();
    let whole = tok.encode(&(format_input(&entry) + &format_response(&entry.output)));
    println!(
        "     entry 50 is {} tokens, {prompt} of them the prompt",
        whole.len()
    );

    // 7.3 collating: each entry gets one <|endoftext|>, the batch is padded to its longest,
    // targets are the inputs shifted by one, and padding targets after the first are ignored
    let batch: [&[usize]; 3] = [&[0, 1, 2, 3, 4], &[5, 6], &[7, 8, 9]];
    let c = collate(&batch, PAD, None, None);
    println!("7.3  the book's batch [0 1 2 3 4], [5 6], [7 8 9] collated:");
    print_rows("inputs ", &c.inputs, c.seq_len);
    print_rows("targets", &c.targets, c.seq_len);
    let [one, two, three] = book_losses();
    println!(
        "     cross-entropy of the book's logits: two rows {one:.4}, three rows {two:.4}, the \
         third target ignored {three:.4}"
    );

    // exercise 7.2: the prompt's targets ignored too, so only the response is learned
    let masked = collate(&[&whole], PAD, None, Some(&[prompt]));
    let counted = masked
        .targets
        .iter()
        .filter(|&&t| t != IGNORE_INDEX)
        .count();
    println!(
        "     with the prompt masked (exercise 7.2, `--mask-prompt`), {counted} of entry 50's {} \
         targets count: the response and its <|endoftext|>",
        masked.targets.len()
    );
    Ok(())
}

fn book_entry() -> InstructionEntry {
    InstructionEntry {
        instruction: "Identify the correct spelling of the following word.".into(),
        input: "Ocassion".into(),
        output: "The correct spelling is 'Occasion.'".into(),
    }
}

/// Section 7.3's demonstration: logits [[-1, 1], [-0.5, 1.5]] with targets [0, 1]; a third
/// row [-0.5, 1.5] with target 1; that third target ignored.
fn book_losses() -> [f32; 3] {
    let two = Tensor::from_vec(vec![-1.0, 1.0, -0.5, 1.5], &[2, 2]);
    let three = Tensor::from_vec(vec![-1.0, 1.0, -0.5, 1.5, -0.5, 1.5], &[3, 2]);
    [
        two.cross_entropy(&[0, 1]).item(),
        three.cross_entropy(&[0, 1, 1]).item(),
        three.cross_entropy(&[0, 1, IGNORE_INDEX]).item(),
    ]
}

/// Rows of ids, ignored targets shown as the book's -100.
fn print_rows(what: &str, ids: &[usize], width: usize) {
    for (i, row) in ids.chunks(width).enumerate() {
        let shown: Vec<String> = row
            .iter()
            .map(|&t| match t {
                IGNORE_INDEX => "-100".to_string(),
                t => t.to_string(),
            })
            .collect();
        let label = if i == 0 { what } else { "       " };
        println!("     {label} [{}]", shown.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_split_collate_and_losses() {
        let entries = vec![book_entry(); 1100];
        let (train, test, val) = split(&entries);
        assert_eq!((train.len(), test.len(), val.len()), (935, 110, 55));
        let c = collate(&[&[0, 1, 2, 3, 4], &[5, 6], &[7, 8, 9]], PAD, None, None);
        let i = IGNORE_INDEX;
        #[rustfmt::skip]
        assert_eq!(c.inputs, [0, 1, 2, 3, 4, 5, 6, PAD, PAD, PAD, 7, 8, 9, PAD, PAD]);
        #[rustfmt::skip]
        assert_eq!(c.targets, [1, 2, 3, 4, PAD, 6, PAD, i, i, i, 8, 9, PAD, i, i]);
        let rounded = book_losses().map(|l| (l * 1e4).round() / 1e4);
        assert_eq!(rounded, [1.1269, 0.7936, 1.1269]);
    }

    #[test]
    fn the_books_template() {
        let e = book_entry();
        assert_eq!(
            format_input(&e) + &format_response(&e.output),
            "Below is an instruction that describes a task. Write a response that appropriately \
             completes the request.\n\n### Instruction:\nIdentify the correct spelling of the \
             following word.\n\n### Input:\nOcassion\n\n### Response:\nThe correct spelling is \
             'Occasion.'"
        );
    }
}
