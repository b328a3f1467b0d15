//! The SSE parser on arbitrary bytes, fed in arbitrary pieces.
//!
//! Input layout: `[limit][n][n chunk lengths][stream bytes...]`. `limit` picks the frame size
//! limit (small limits exercise the oversize path); the chunk lengths cut the stream into
//! pieces, cycling, the way a socket might deliver it.
//!
//! Invariants:
//! - never panics;
//! - the same items and last event id whatever the split: whole, in the derived pieces, and
//!   byte by byte;
//! - with the default limit, the same items as a naive line-by-line reference of the WHATWG
//!   algorithm (split lines first, then interpret);
//! - no event carries more field data than the limit; every oversize report is over it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::sources::autoplay::sse::{DEFAULT_MAX_FRAME_BYTES, SseEvent, SseItem, SseParser};

fuzz_target!(|input: &[u8]| {
    let Some((&limit, rest)) = input.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(n);
    let max_frame = if limit < 128 {
        8 + usize::from(limit) * 4
    } else {
        DEFAULT_MAX_FRAME_BYTES
    };

    let whole = run(max_frame, [stream]);
    let mut pieces = Vec::new();
    let mut cursor = stream;
    let mut i = 0;
    while !cursor.is_empty() {
        let len = lengths
            .get(i % lengths.len().max(1))
            .map_or(cursor.len(), |&l| usize::from(l).max(1))
            .min(cursor.len());
        let (piece, tail) = cursor.split_at(len);
        pieces.push(piece);
        cursor = tail;
        i += 1;
    }
    let split = run(max_frame, pieces.iter().copied());
    assert_eq!(whole, split, "different items when split into {pieces:?}");
    let bytewise = run(max_frame, stream.chunks(1));
    assert_eq!(whole, bytewise, "different items when fed byte by byte");

    for item in &whole.0 {
        match item {
            SseItem::Event(event) => {
                assert!(!event.event.is_empty());
                assert!(event.data.len() <= max_frame, "event over the frame limit");
            }
            SseItem::Oversize { bytes } => assert!(*bytes > max_frame),
            SseItem::Retry(_) | SseItem::InvalidUtf8 => {}
        }
    }
    if max_frame == DEFAULT_MAX_FRAME_BYTES && stream.len() < max_frame {
        assert_eq!(whole, reference(stream), "differs from the reference");
    }
});

fn run<'a>(
    max_frame: usize,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<SseItem>, Option<String>) {
    let mut parser = SseParser::new(max_frame);
    let mut items = Vec::new();
    for piece in pieces {
        parser.feed(piece, &mut |item| items.push(item));
    }
    (items, parser.last_event_id().map(str::to_string))
}

/// The WHATWG algorithm the slow, obvious way: split the whole stream into lines, then
/// interpret them one by one. An unterminated last line is never dispatched.
fn reference(stream: &[u8]) -> (Vec<SseItem>, Option<String>) {
    let stream = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < stream.len() {
        match stream[i] {
            b'\n' => {
                lines.push(&stream[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&stream[start..i]);
                i += if stream.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }

    let mut items = Vec::new();
    let mut data = String::new();
    let mut has_data = false;
    let mut event_type = String::new();
    let mut last_id: Option<String> = None;
    let mut invalid = false;
    for line in lines {
        if line.is_empty() {
            if invalid {
                items.push(SseItem::InvalidUtf8);
            } else if has_data {
                let mut text = std::mem::take(&mut data);
                if text.ends_with('\n') {
                    text.pop();
                }
                let event = if event_type.is_empty() {
                    "message".to_string()
                } else {
                    event_type.clone()
                };
                items.push(SseItem::Event(SseEvent {
                    event,
                    data: text,
                    id: last_id.clone(),
                }));
            }
            data.clear();
            has_data = false;
            event_type.clear();
            invalid = false;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let Ok(value) = std::str::from_utf8(value) else {
            invalid = true;
            continue;
        };
        match name {
            b"data" => {
                data.push_str(value);
                data.push('\n');
                has_data = true;
            }
            b"event" => event_type = value.to_string(),
            b"id" if !value.contains('\0') => last_id = Some(value.to_string()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    items.push(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }
    (items, last_id)
}
