"""Writes src/trainyard/fixtures/strandset_rust.jsonl: ~200 rows in Strandset-Rust-v1's
column format (crate_name, input_data, output_data, task_category, test; the *_data
columns JSON-encoded). Deterministic: re-running yields the same bytes."""

import json
import random
from pathlib import Path

FUNCS = [
    ("clamp_add", "Adds two u32 values, saturating at a maximum.", "fn clamp_add(a: u32, b: u32, max: u32) -> u32 {\n    a.saturating_add(b).min(max)\n}", "fn clamp_add(a: u32, b: u32, max: u32) -> u32 {\n    (a + b).min(max)\n}", "Plain `+` overflows and panics in debug builds; use saturating_add."),
    ("mean", "Returns the arithmetic mean of a slice of f64, or None when empty.", "fn mean(xs: &[f64]) -> Option<f64> {\n    if xs.is_empty() {\n        return None;\n    }\n    Some(xs.iter().sum::<f64>() / xs.len() as f64)\n}", "fn mean(xs: &[f64]) -> Option<f64> {\n    Some(xs.iter().sum::<f64>() / xs.len() as f64)\n}", "Dividing by zero length yields NaN instead of None."),
    ("word_count", "Counts whitespace-separated words in a string.", "fn word_count(s: &str) -> usize {\n    s.split_whitespace().count()\n}", "fn word_count(s: &str) -> usize {\n    s.split(' ').count()\n}", "split(' ') counts empty pieces between repeated spaces."),
    ("first_even", "Returns the first even number in a vector.", "fn first_even(v: &[i64]) -> Option<i64> {\n    v.iter().copied().find(|x| x % 2 == 0)\n}", "fn first_even(v: &[i64]) -> Option<i64> {\n    v.iter().copied().find(|x| x % 2 == 1)\n}", "The predicate tests for odd numbers."),
    ("reverse_words", "Reverses the order of words in a sentence.", "fn reverse_words(s: &str) -> String {\n    s.split_whitespace().rev().collect::<Vec<_>>().join(\" \")\n}", "fn reverse_words(s: &str) -> String {\n    s.chars().rev().collect()\n}", "It reverses characters, not words."),
    ("parse_port", "Parses a TCP port number from a string.", "fn parse_port(s: &str) -> Result<u16, std::num::ParseIntError> {\n    s.trim().parse::<u16>()\n}", "fn parse_port(s: &str) -> u16 {\n    s.parse().unwrap()\n}", "unwrap panics on invalid input; return a Result instead."),
    ("max_by_len", "Returns the longest string in a slice.", "fn max_by_len<'a>(v: &[&'a str]) -> Option<&'a str> {\n    v.iter().copied().max_by_key(|s| s.len())\n}", "fn max_by_len<'a>(v: &[&'a str]) -> Option<&'a str> {\n    v.iter().copied().min_by_key(|s| s.len())\n}", "min_by_key returns the shortest string."),
    ("is_palindrome", "Checks whether a string reads the same backwards, ignoring case.", "fn is_palindrome(s: &str) -> bool {\n    let c: Vec<char> = s.to_lowercase().chars().collect();\n    c.iter().eq(c.iter().rev())\n}", "fn is_palindrome(s: &str) -> bool {\n    s.chars().eq(s.chars().rev())\n}", "Case is not normalised, so \"Abba\" fails."),
    ("dedup_sorted", "Removes duplicates from a vector and returns it sorted.", "fn dedup_sorted(mut v: Vec<i32>) -> Vec<i32> {\n    v.sort_unstable();\n    v.dedup();\n    v\n}", "fn dedup_sorted(mut v: Vec<i32>) -> Vec<i32> {\n    v.dedup();\n    v.sort_unstable();\n    v\n}", "dedup only removes adjacent duplicates, so it must run after sorting."),
    ("celsius_to_f", "Converts Celsius to Fahrenheit.", "fn celsius_to_f(c: f64) -> f64 {\n    c * 9.0 / 5.0 + 32.0\n}", "fn celsius_to_f(c: f64) -> f64 {\n    c * 5.0 / 9.0 + 32.0\n}", "The ratio is inverted."),
    ("fib", "Computes the n-th Fibonacci number iteratively.", "fn fib(n: u32) -> u64 {\n    let (mut a, mut b) = (0u64, 1u64);\n    for _ in 0..n {\n        (a, b) = (b, a + b);\n    }\n    a\n}", "fn fib(n: u32) -> u64 {\n    let (mut a, mut b) = (0u64, 1u64);\n    for _ in 0..n {\n        a = b;\n        b = a + b;\n    }\n    a\n}", "a is overwritten before b uses its old value."),
    ("count_chars", "Counts occurrences of each character.", "use std::collections::HashMap;\n\nfn count_chars(s: &str) -> HashMap<char, usize> {\n    let mut m = HashMap::new();\n    for c in s.chars() {\n        *m.entry(c).or_insert(0) += 1;\n    }\n    m\n}", "use std::collections::HashMap;\n\nfn count_chars(s: &str) -> HashMap<char, usize> {\n    let mut m = HashMap::new();\n    for c in s.chars() {\n        m.insert(c, 1);\n    }\n    m\n}", "insert overwrites the count instead of incrementing it."),
    ("read_lines", "Reads a file into a vector of lines.", "use std::fs;\nuse std::io;\n\nfn read_lines(path: &str) -> io::Result<Vec<String>> {\n    Ok(fs::read_to_string(path)?.lines().map(String::from).collect())\n}", "use std::fs;\n\nfn read_lines(path: &str) -> Vec<String> {\n    fs::read_to_string(path).unwrap().lines().map(String::from).collect()\n}", "Errors are unwrapped instead of propagated with ?."),
    ("binary_search", "Finds the index of a target in a sorted slice.", "fn binary_search(v: &[i32], t: i32) -> Option<usize> {\n    let (mut lo, mut hi) = (0, v.len());\n    while lo < hi {\n        let mid = lo + (hi - lo) / 2;\n        match v[mid].cmp(&t) {\n            std::cmp::Ordering::Less => lo = mid + 1,\n            std::cmp::Ordering::Greater => hi = mid,\n            std::cmp::Ordering::Equal => return Some(mid),\n        }\n    }\n    None\n}", "fn binary_search(v: &[i32], t: i32) -> Option<usize> {\n    let (mut lo, mut hi) = (0, v.len());\n    while lo < hi {\n        let mid = (lo + hi) / 2;\n        if v[mid] < t { lo = mid; } else if v[mid] > t { hi = mid; } else { return Some(mid); }\n    }\n    None\n}", "lo = mid never advances past mid, so the loop can spin forever."),
    ("gcd", "Greatest common divisor of two numbers.", "fn gcd(mut a: u64, mut b: u64) -> u64 {\n    while b != 0 {\n        (a, b) = (b, a % b);\n    }\n    a\n}", "fn gcd(a: u64, b: u64) -> u64 {\n    gcd(b, a % b)\n}", "The recursion has no base case for b == 0."),
    ("join_paths", "Joins a base directory and a file name.", "use std::path::{Path, PathBuf};\n\nfn join_paths(base: &Path, name: &str) -> PathBuf {\n    base.join(name)\n}", "use std::path::{Path, PathBuf};\n\nfn join_paths(base: &Path, name: &str) -> PathBuf {\n    PathBuf::from(format!(\"{}{}\", base.display(), name))\n}", "String concatenation drops the path separator."),
    ("sum_squares", "Sums the squares of the numbers in a slice.", "fn sum_squares(v: &[i64]) -> i64 {\n    v.iter().map(|x| x * x).sum()\n}", "fn sum_squares(v: &[i64]) -> i64 {\n    v.iter().map(|x| x * 2).sum()\n}", "x * 2 doubles instead of squaring."),
    ("capitalize", "Uppercases the first character of a string.", "fn capitalize(s: &str) -> String {\n    let mut c = s.chars();\n    match c.next() {\n        Some(f) => f.to_uppercase().chain(c).collect(),\n        None => String::new(),\n    }\n}", "fn capitalize(s: &str) -> String {\n    s[..1].to_uppercase() + &s[1..]\n}", "Byte slicing panics on empty strings and multi-byte characters."),
    ("chunk_sums", "Sums each chunk of k elements.", "fn chunk_sums(v: &[u32], k: usize) -> Vec<u32> {\n    v.chunks(k).map(|c| c.iter().sum()).collect()\n}", "fn chunk_sums(v: &[u32], k: usize) -> Vec<u32> {\n    v.windows(k).map(|c| c.iter().sum()).collect()\n}", "windows overlaps; chunks is what was meant."),
    ("env_or_default", "Reads an environment variable with a default.", "fn env_or_default(key: &str, default: &str) -> String {\n    std::env::var(key).unwrap_or_else(|_| default.to_string())\n}", "fn env_or_default(key: &str, default: &str) -> String {\n    std::env::var(key).unwrap()\n}", "The default is never used; missing variables panic."),
]
CRATES = ["serde_json", "tokio", "rayon", "clap", "regex", "anyhow", "itertools", "bytes", "hyper", "chrono"]


def rows():
    rng = random.Random(0)
    for i, (name, desc, code, buggy, bug) in enumerate(FUNCS):
        crate = CRATES[i % len(CRATES)]
        sig = code.split("{")[0].strip().splitlines()[-1]
        body_lines = code.splitlines()
        cut = max(1, len(body_lines) // 2)
        prefix, completion = "\n".join(body_lines[:cut]) + "\n", "\n".join(body_lines[cut:])
        test = f"#[test]\nfn test_{name}() {{\n    // exercises {name}\n}}"
        tasks = {
            "code_generation": ({"title": name.replace("_", " "), "description": desc, "code_context": sig}, {"code": code}),
            "code_completion": ({"prefix": prefix, "suffix": ""}, {"completion": completion}),
            "bug_detection": ({"buggy_code": buggy}, {"fixed_code": code, "bug_description": bug}),
            "code_review": ({"code_before": buggy}, {"code_after": code, "review_comment": bug}),
            "code_refactoring": ({"code_before": buggy, "code_context": desc}, {"rationale": bug, "code_after": code}),
            "code_explanation": ({"code": code}, {"explanation": desc}),
            "docstring_generation": ({"code": code}, {"docstring": f"/// {desc}"}),
            "function_naming": ({"code": code.replace(name, "__placeholder__")}, {"function_name": name}),
            "test_generation": ({"code_to_test": code, "test_context": "#[cfg(test)]"}, {"test_cases": [test]}),
            "code_summarization": ({"code": code}, {"summary": desc.rstrip(".")}),
        }
        for cat, (inp, out) in tasks.items():
            yield {"crate_name": crate, "input_data": json.dumps(inp), "output_data": json.dumps(out), "task_category": cat, "test": test if rng.random() < 0.3 else ""}


def main():
    out = list(rows())
    # Two rows as they occur in the wild: one with a raw newline inside a JSON string
    # (needs the lenient parse) and one truncated (a counted skip).
    out.append({"crate_name": "nom", "input_data": '{"code": "fn id(x: u8) -> u8 {\n    x\n}"}', "output_data": '{"summary": "Identity on u8"}', "task_category": "code_summarization", "test": ""})
    out.append({"crate_name": "nom", "input_data": '{"code": "fn broken(', "output_data": '{"summary": "truncated"}', "task_category": "code_summarization", "test": ""})
    path = Path(__file__).resolve().parents[1] / "src/trainyard/fixtures/strandset_rust.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {len(out)} rows to {path}")


if __name__ == "__main__":
    main()
