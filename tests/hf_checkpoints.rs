//! Real GPT-2 checkpoints, as users get them from Hugging Face:
//! - a snapshot directory laid out like the published `openai-community/gpt2` repository
//!   (every file it holds, the other weight formats ignored) loads and generates as it is;
//! - checkpoints of older scratchgpt versions (scratchgpt's own `tokenizer.json` marker) still
//!   load, and new ones carry Hugging Face's `tokenizer.json`;
//! - `--checkpoint gpt2` downloads into the Hugging Face cache from a server on 127.0.0.1 that
//!   these tests start (`HF_ENDPOINT`), continues an interrupted transfer, and later runs use
//!   the cache without a request (also with `HF_HUB_OFFLINE=1`).
//!
//! The real GPT-2 vocabulary comes from `../shared/data/gpt2` (OpenAI's `encoder.json` and
//! `vocab.bpe`); the tests that need it skip cleanly when it is absent.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use model::{weights, Context, GptConfig, GptModel};
use serde_json::{json, Value};
use train::tokenizer::TokenizerKind;
use train::Tokenizer;

const REPO: &str = "openai-community/gpt2";
const COMMIT: &str = "607a30d783dfa663caf39e06633721c8d4cfcd7e";

/// Every file the published repository holds besides the ones scratchgpt reads.
const OTHER_FORMATS: [&str; 6] = [
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "64-8bits.tflite",
    "onnx/decoder_model.onnx",
];

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scratchgpt"));
    // only the test's own server may be asked anything: no proxy, no token, no other cache
    for var in [
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        c.env_remove(var);
    }
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

#[track_caller]
fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last stderr line of a failed run: one `error:` line.
#[track_caller]
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    last
}

fn generate(checkpoint: &str) -> Command {
    let mut c = bin();
    c.args([
        "generate",
        "--checkpoint",
        checkpoint,
        "--prompt",
        "Hello, my name is",
        "--max-new-tokens",
        "4",
    ]);
    c
}

/// OpenAI's GPT-2 vocabulary files, or `None` (and a note) when they are not there.
fn gpt2_vocabulary() -> Option<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/gpt2");
    match (
        std::fs::read_to_string(dir.join("encoder.json")),
        std::fs::read_to_string(dir.join("vocab.bpe")),
    ) {
        (Ok(e), Ok(b)) => Some((e, b)),
        _ => {
            eprintln!(
                "skipping: GPT-2's encoder.json/vocab.bpe not found in {}",
                dir.display()
            );
            None
        }
    }
}

/// Hugging Face's `tokenizer.json` for GPT-2, built here from OpenAI's files the way the
/// published one is (merges as `"a b"` strings, or as `["a", "b"]` pairs like newer files).
fn hf_tokenizer_json(encoder: &str, bpe: &str, merges_as_pairs: bool) -> Vec<u8> {
    let vocab: Value = serde_json::from_str(encoder).unwrap();
    let merges: Vec<Value> = bpe
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .map(|l| match l.split_once(' ') {
            Some((a, b)) if merges_as_pairs => json!([a, b]),
            _ => json!(l),
        })
        .collect();
    let byte_level = |prefix: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": trim, "use_regex": true});
    serde_json::to_vec(&json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null,
        "pre_tokenizer": byte_level(false, true),
        "post_processor": byte_level(true, false),
        "decoder": byte_level(true, true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
    }))
    .unwrap()
}

/// Random weights of a GPT-2 shaped model written to `dir` (config.json, model.safetensors).
fn write_model(dir: &Path, vocab_size: usize) {
    let cfg = GptConfig {
        vocab_size,
        context_length: 64,
        emb_dim: 8,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.1,
        qkv_bias: true,
        tie_weights: true,
    };
    let model = GptModel::new(&cfg, &Context::new(7)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    weights::save_model(&model, dir).unwrap();
}

/// A snapshot with every file of the published `openai-community/gpt2` repository: a micro
/// GPT-2 (vocabulary 50257, width 8) and the real tokenizer files.
fn gpt2_snapshot(dir: &Path, encoder: &str, bpe: &str, merges_as_pairs: bool) {
    write_model(dir, 50257);
    // the published config.json, with this model's sizes
    let config = json!({
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
        "n_ctx": 64, "n_embd": 8, "n_head": 2, "n_layer": 1, "n_positions": 64,
        "resid_pdrop": 0.1, "summary_activation": null, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": true, "summary_type": "cls_index", "summary_use_proj": true,
        "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
        "vocab_size": 50257
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("config.json", serde_json::to_vec_pretty(&config).unwrap()),
        ("vocab.json", encoder.as_bytes().to_vec()),
        ("merges.txt", bpe.as_bytes().to_vec()),
        (
            "tokenizer.json",
            hf_tokenizer_json(encoder, bpe, merges_as_pairs),
        ),
        (
            "tokenizer_config.json",
            br#"{"model_max_length": 1024}"#.to_vec(),
        ),
        (
            "generation_config.json",
            br#"{"_from_model_config": true, "bos_token_id": 50256, "eos_token_id": 50256, "transformers_version": "4.26.0.dev0"}"#.to_vec(),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    for name in OTHER_FORMATS {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"\x80\x02 not for scratchgpt").unwrap();
    }
}

#[test]
fn a_hugging_face_gpt2_snapshot_loads_as_it_is_and_generates() {
    let Some((encoder, bpe)) = gpt2_vocabulary() else {
        return;
    };
    let root = common::fresh_dir("hf-snapshot");
    for (case, as_pairs) in [("strings", false), ("pairs", true)] {
        let snap = root.join(case);
        gpt2_snapshot(&snap, &encoder, &bpe, as_pairs);
        // the Hugging Face tokenizer.json is what is read, and it is GPT-2's tokenizer
        let tok = Tokenizer::load(&snap).unwrap();
        assert_eq!(*tok.kind(), TokenizerKind::Gpt2, "{case}");
        std::fs::write(
            snap.join("vocab.json"),
            b"not read when tokenizer.json is there",
        )
        .unwrap();
        assert_eq!(*Tokenizer::load(&snap).unwrap().kind(), TokenizerKind::Gpt2);
        let s = snap.to_str().unwrap();
        let out = assert_ok(&run(&mut generate(s)));
        assert!(out.starts_with("Hello, my name is"), "{out}");
        let data = root.join("eval.txt");
        std::fs::write(
            &data,
            "Every effort moves you forward, step by step. ".repeat(40),
        )
        .unwrap();
        let out = assert_ok(&run(bin().args([
            "eval",
            "--checkpoint",
            s,
            "--data",
            data.to_str().unwrap(),
        ])));
        assert!(out.contains("loss"), "{out}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn checkpoints_of_older_versions_still_load() {
    // scratchgpt before Hugging Face tokenizer files: tokenizer.json = {"kind": ...}
    let dir = common::fresh_dir("hf-old-checkpoint");
    write_model(&dir, 257);
    std::fs::write(dir.join("tokenizer.json"), "{\n  \"kind\": \"bytes\"\n}").unwrap();
    let out = assert_ok(&run(&mut generate(dir.to_str().unwrap())));
    assert!(out.starts_with("Hello, my name is"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runs_of_older_versions_resume() {
    let dir = common::fresh_dir("hf-old-run");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let mut args = vec!["train", "--out", o, "--max-steps", "1"];
    args.extend_from_slice(&common::small_model());
    args.push("--quiet");
    assert_ok(&run(bin().args(&args)));
    // made into what earlier versions wrote: trainer_state.json and the kind marker
    let ckpt = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim());
    std::fs::rename(
        ckpt.join("scratchgpt_state.json"),
        ckpt.join("trainer_state.json"),
    )
    .unwrap();
    std::fs::write(ckpt.join("tokenizer.json"), "{\n  \"kind\": \"bytes\"\n}").unwrap();
    std::fs::remove_file(ckpt.join("vocab.json")).unwrap();
    std::fs::remove_file(ckpt.join("merges.txt")).unwrap();
    assert_ok(&run(bin().args([
        "train",
        "--resume",
        o,
        "--max-steps",
        "2",
        "--quiet",
    ])));
    let ckpt = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim());
    assert!(ckpt.ends_with("step-00000002"), "{}", ckpt.display());
    assert!(ckpt.join("scratchgpt_state.json").is_file());
    assert!(!ckpt.join("trainer_state.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_written_now_carry_hugging_face_tokenizer_files() {
    let dir = common::fresh_dir("hf-new-checkpoint");
    let out = dir.join("run");
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--max-steps", "1"];
    args.extend_from_slice(&common::small_model());
    args.push("--quiet");
    assert_ok(&run(bin().args(&args)));
    let ckpt = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim());
    let json: Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(json["model"]["type"], "BPE");
    assert_eq!(json["model"]["vocab"].as_object().unwrap().len(), 257);
    assert!(ckpt.join("vocab.json").is_file() && ckpt.join("merges.txt").is_file());
    // Hugging Face's GPT2Config would otherwise take 50256 as end-of-text
    let config: Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["eos_token_id"], 256);
    assert_eq!(config["bos_token_id"], 256);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------ the hub, on 127.0.0.1

/// One request the server answered: path and `Range` header.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// A stand-in for the hub serving `files` at `/{REPO}/resolve/main/{file}` the way the hub
/// answers `hf-hub`: `ETag`, `X-Repo-Commit`, byte ranges with `Content-Range`, 404 for a file
/// the repository lacks. The first `cut` full transfers of `model.safetensors` stop halfway
/// and close the connection. It stops when dropped, or by itself after a minute or 200
/// connections.
struct Hub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How the hub serves model.safetensors when asked for the whole file.
#[derive(Clone, Copy, PartialEq)]
enum Body {
    /// As announced (possibly cut, see `Hub::start`'s `cut`).
    Whole,
    /// Half of it without a Content-Length, then the connection closes: a transfer that
    /// looks complete to the client.
    HalfWithoutLength,
    /// The head and a few bytes, then nothing for 5 s.
    Stall,
    /// In 16 pieces a tenth of a second apart.
    Slow,
}

impl Hub {
    fn start(files: HashMap<String, Vec<u8>>, cut: usize) -> Hub {
        Hub::start_with(files, cut, Body::Whole)
    }

    fn start_with(files: HashMap<String, Vec<u8>>, cut: usize, body: Body) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let cuts_left = Arc::new(AtomicUsize::new(cut));
        let files = Arc::new(files);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut connections = 0;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline && connections < 200 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections += 1;
                        let (files, seen, cuts) = (files.clone(), seen2.clone(), cuts_left.clone());
                        std::thread::spawn(move || serve(stream, &files, &seen, &cuts, body));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hub {
            url,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A content hash standing in for the hub's ETag (FNV-1a, twice).
fn etag(bytes: &[u8]) -> String {
    let mut hashes = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4];
    for h in &mut hashes {
        for &b in bytes {
            *h ^= b as u64;
            *h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:016x}{:016x}", hashes[0], hashes[1])
}

/// Answers the requests of one connection (one request: every answer closes it).
fn serve(
    stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    seen: &Mutex<Vec<Seen>>,
    cuts: &AtomicUsize,
    how: Body,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let mut out = stream;
    let prefix = format!("/{REPO}/resolve/main/");
    let Some(bytes) = path.strip_prefix(&prefix).and_then(|f| files.get(f)) else {
        let _ = out.write_all(
            b"HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let total = bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(total - 1))
        }
        None => (0, total - 1),
    };
    let body = &bytes[start..=end];
    // the transfer of the model file itself (not the one-byte probe for its metadata)
    let whole_model = path.ends_with("/model.safetensors") && range.as_deref() != Some("bytes=0-0");
    if whole_model && how == Body::HalfWithoutLength {
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{total}\r\nETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
            etag(bytes)
        );
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(&body[..body.len() / 2]);
        return;
    }
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{total}\r\nAccept-Ranges: bytes\r\nETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
        body.len(),
        etag(bytes)
    );
    let _ = out.write_all(head.as_bytes());
    if whole_model && how == Body::Slow {
        for piece in body.chunks(body.len().div_ceil(16)) {
            let _ = out.write_all(piece);
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(100));
        }
        return;
    }
    if whole_model && how == Body::Stall {
        let _ = out.write_all(&body[..10]);
        let _ = out.flush();
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    let cut_this = path.ends_with("/model.safetensors")
        && body.len() > 1
        && cuts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if cut_this {
        // a broken transfer: half of what is left, then the connection closes
        let _ = out.write_all(&body[..body.len() / 2]);
        let _ = out.flush();
        let _ = out.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = out.write_all(body);
    let _ = out.flush();
}

/// The repository as served: a micro GPT-2 with the bytes tokenizer's files (no real
/// vocabulary needed), every other format the repository holds, and `tokenizer.json` unless
/// `without_tokenizer_json`.
fn served_files(without_tokenizer_json: bool) -> HashMap<String, Vec<u8>> {
    let dir = common::fresh_dir(&format!("hf-served-{without_tokenizer_json}"));
    write_model(&dir, 257);
    let mut files = HashMap::new();
    for name in ["config.json", "model.safetensors"] {
        files.insert(name.to_string(), std::fs::read(dir.join(name)).unwrap());
    }
    for (name, bytes) in Tokenizer::bytes().files() {
        if !(without_tokenizer_json && name == "tokenizer.json") {
            files.insert(name, bytes);
        }
    }
    for name in OTHER_FORMATS {
        files.insert(name.to_string(), b"not for scratchgpt".to_vec());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    files
}

fn with_hub(cmd: &mut Command, hf_home: &Path, hub: &Hub) {
    cmd.env("HF_HOME", hf_home).env("HF_ENDPOINT", &hub.url);
}

fn snapshot(hf_home: &Path) -> PathBuf {
    hf_home
        .join("hub/models--openai-community--gpt2/snapshots")
        .join(COMMIT)
}

#[test]
fn gpt2_by_name_downloads_only_what_it_needs_then_uses_the_cache() {
    let home = common::fresh_dir("hf-home-download");
    let files = served_files(false);
    let hub = Hub::start(files.clone(), 1);
    // first run: downloads; the model file's transfer breaks once and is continued
    let mut first = generate("gpt2");
    with_hub(&mut first, &home, &hub);
    let out = assert_ok(&run(&mut first));
    assert!(out.starts_with("Hello, my name is"), "{out}");
    let seen = hub.seen();
    let mut asked: Vec<&str> = seen
        .iter()
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    asked.sort();
    asked.dedup();
    assert_eq!(
        asked,
        [
            "config.json",
            "merges.txt",
            "model.safetensors",
            "tokenizer.json",
            "vocab.json"
        ]
    );
    let resumed = seen.iter().any(|s| {
        s.path.ends_with("model.safetensors")
            && s.range
                .as_deref()
                .is_some_and(|r| r != "bytes=0-0" && r != "bytes=0-")
    });
    assert!(
        resumed,
        "no request continued the broken transfer: {seen:?}"
    );
    let snap = snapshot(&home);
    for (name, bytes) in &files {
        if !OTHER_FORMATS.contains(&name.as_str()) {
            assert_eq!(&std::fs::read(snap.join(name)).unwrap(), bytes, "{name}");
        }
    }
    // second run, by the repository's id: the cache only, not one request
    let n = hub.seen().len();
    let mut second = generate("openai-community/gpt2");
    with_hub(&mut second, &home, &hub);
    assert_ok(&run(&mut second));
    assert_eq!(hub.seen().len(), n, "the second run asked the server");
    drop(hub);
    // offline, with nothing listening: still the cache
    let mut offline = generate("gpt2");
    offline
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9");
    assert_ok(&run(&mut offline));
    // and eval takes a name too
    let data = home.join("eval.txt");
    std::fs::write(&data, "Every effort moves you forward. ".repeat(20)).unwrap();
    let mut eval = bin();
    eval.args([
        "eval",
        "--checkpoint",
        "gpt2",
        "--data",
        data.to_str().unwrap(),
    ])
    .env("HF_HOME", &home)
    .env("HF_HUB_OFFLINE", "1");
    assert!(assert_ok(&run(&mut eval)).contains("loss"));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_download_that_keeps_breaking_fails_in_one_line_and_the_next_run_continues_it() {
    let home = common::fresh_dir("hf-home-resume");
    // more breaks than one run retries; the repository has no tokenizer.json (optional)
    let files = served_files(true);
    let hub = Hub::start(files.clone(), 10);
    let mut first = generate("gpt2");
    with_hub(&mut first, &home, &hub);
    let e = error_line(&run(&mut first));
    let url = format!("{}/{REPO}/resolve/main/model.safetensors", hub.url);
    assert!(
        e.starts_with(&format!("error: could not download {url}: ")),
        "{e}"
    );
    assert!(
        e.contains("by hand") && e.contains("--checkpoint DIR"),
        "{e}"
    );
    drop(hub);
    let partial: Vec<PathBuf> =
        std::fs::read_dir(home.join("hub/models--openai-community--gpt2/blobs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "part"))
            .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    let kept = std::fs::metadata(&partial[0]).unwrap().len();
    assert!(kept > 0);
    // the next run asks only for the rest
    let hub = Hub::start(files.clone(), 0);
    let mut second = generate("gpt2");
    with_hub(&mut second, &home, &hub);
    assert_ok(&run(&mut second));
    let ranges: Vec<String> = hub
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("model.safetensors"))
        .filter_map(|s| s.range.clone())
        .collect();
    assert!(ranges.contains(&format!("bytes={kept}-")), "{ranges:?}");
    let snap = snapshot(&home);
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        files["model.safetensors"]
    );
    // the missing optional file is remembered, so the next run needs no server
    let n = hub.seen().len();
    assert_ok(&run(generate("gpt2")
        .env("HF_HOME", &home)
        .env("HF_ENDPOINT", &hub.url)));
    assert_eq!(hub.seen().len(), n);
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn names_fail_in_one_line_when_unknown_or_offline_and_not_cached() {
    let home = common::fresh_dir("hf-home-errors");
    let e = error_line(&run(generate("gpt3").env("HF_HOME", &home)));
    assert!(e.contains("gpt3: no such directory, and not a model name scratchgpt knows (gpt2, gpt2-medium, gpt2-large, gpt2-xl"), "{e}");
    let e = error_line(&run(generate("gpt2-xl")
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")));
    assert!(
        e.contains("openai-community/gpt2-xl is not in the Hugging Face cache"),
        "{e}"
    );
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
    // HF_HUB_CACHE wins over HF_HOME
    let cache = home.join("elsewhere");
    let e = error_line(&run(generate("gpt2")
        .env("HF_HOME", &home)
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "true")));
    assert!(e.contains(&cache.display().to_string()), "{e}");
    // what transformers' from_pretrained("gpt2") left in the cache is used, without network
    let legacy = home.join("hub/models--gpt2");
    std::fs::create_dir_all(legacy.join("refs")).unwrap();
    std::fs::write(legacy.join("refs/main"), COMMIT).unwrap();
    write_model(&legacy.join("snapshots").join(COMMIT), 257);
    std::fs::write(
        legacy.join("snapshots").join(COMMIT).join("tokenizer.json"),
        Tokenizer::bytes().files()[0].1.clone(),
    )
    .unwrap();
    assert_ok(&run(generate("gpt2")
        .env("HF_HOME", &home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")));
    std::fs::remove_dir_all(&legacy).unwrap();
    // an existing directory of that name wins over the name
    let cwd = home.join("cwd");
    write_model(&cwd.join("gpt2"), 257);
    std::fs::write(
        cwd.join("gpt2/tokenizer.json"),
        Tokenizer::bytes().files()[0].1.clone(),
    )
    .unwrap();
    assert_ok(&run(generate("gpt2")
        .current_dir(&cwd)
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_model_too_large_for_memory_is_refused_before_its_weights_are_downloaded() {
    let home = common::fresh_dir("hf-home-too-large");
    let mut files = served_files(false);
    let huge = json!({"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024,
        "n_embd": 12800, "n_head": 64, "n_layer": 8}); // 16 G parameters, 64 GB
    files.insert("config.json".into(), serde_json::to_vec(&huge).unwrap());
    let hub = Hub::start(files, 0);
    let mut cmd = generate("gpt2");
    with_hub(&mut cmd, &home, &hub);
    let e = error_line(&run(&mut cmd));
    assert!(e.contains("config.json needs"), "{e}");
    let seen = hub.seen();
    assert!(
        seen.iter().all(|s| !s.path.ends_with("model.safetensors")),
        "{seen:?}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

/// A body cut short without a Content-Length looks complete to the HTTP client: the file's
/// size is checked against the size the server announced, and a short file leaves the cache
/// again (it used to stay and fail every later run). A server that stops sending ends the
/// command after the stall limit, keeping the partial file.
#[test]
fn a_short_or_stalled_download_is_one_error_line_and_leaves_no_bad_file() {
    let files = served_files(false);
    let home = common::fresh_dir("hf-home-short");
    let hub = Hub::start_with(files.clone(), 0, Body::HalfWithoutLength);
    let mut cmd = generate("gpt2");
    with_hub(&mut cmd, &home, &hub);
    let r = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.contains("bytes of the") && stderr.contains("removed from the cache"),
        "{stderr}"
    );
    assert!(!snapshot(&home).join("model.safetensors").exists());
    drop(hub);
    // the same cache against a sound server: downloaded again, and it works
    let hub = Hub::start(files.clone(), 0);
    let mut cmd = generate("gpt2");
    with_hub(&mut cmd, &home, &hub);
    assert!(assert_ok(&run(&mut cmd)).starts_with("Hello, my name is"));
    drop(hub);

    let home = common::fresh_dir("hf-home-stall");
    let hub = Hub::start_with(files, 0, Body::Stall);
    let mut cmd = generate("gpt2");
    with_hub(&mut cmd, &home, &hub);
    cmd.env("SCRATCHGPT_DOWNLOAD_STALL_SECS", "1");
    let t = Instant::now();
    let r = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && stderr.contains("stalled"),
        "{stderr}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

/// Two processes asking for the same model at once: the second waits for the first's download
/// and uses it (it used to fail after 5 s on the lock of the file being downloaded).
#[test]
fn a_second_process_waits_for_the_download_in_progress() {
    let home = common::fresh_dir("hf-home-two");
    let hub = Hub::start_with(served_files(false), 0, Body::Slow);
    let start = |cmd: &mut Command| {
        with_hub(cmd, &home, &hub);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start(&mut generate("gpt2"));
    std::thread::sleep(Duration::from_millis(400));
    let second = start(&mut generate("gpt2"));
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for r in [&a, &b] {
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert!(String::from_utf8_lossy(&r.stdout).starts_with("Hello, my name is"));
    }
    // (which one waits depends on which took the lock first)
    let waited = [&a, &b]
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.stderr).contains("waiting for another process"))
        .count();
    assert_eq!(waited, 1);
}
