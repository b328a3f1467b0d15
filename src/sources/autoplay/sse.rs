//! An incremental Server-Sent Events parser (WHATWG HTML, "event stream interpretation").
//!
//! Why our own: the stream consumer needs bounded memory per frame (a frame over the limit is
//! skipped and *counted*, not buffered without end), invalid UTF-8 reported per frame instead of
//! silently replaced, and the last event id for `Last-Event-ID` — while being fed arbitrary
//! byte splits from the socket. The maintained crates buffer without bound or hide those
//! cases. It is small, allocation-light, and fuzzed (`fuzz/fuzz_targets/sse_parser.rs`).
//!
//! Handles: LF, CR and CRLF line endings (also CRLF split across reads), a leading BOM,
//! `:` comments, multi-line `data:`, `event:`, `id:` (ignored if it contains NUL), `retry:`
//! (digits only), fields without a colon, and one optional space after the colon.

/// Default largest frame: 1 MiB of field data.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` unless an `event:` field named it.
    pub event: String,
    pub data: String,
    /// The stream's last event id at dispatch (persists across events, as in browsers).
    pub id: Option<String>,
}

/// What the parser hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A `retry:` field: the server's reconnection delay, in milliseconds.
    Retry(u64),
    /// A frame over the size limit was skipped; `bytes` is how much was discarded.
    Oversize {
        bytes: usize,
    },
    /// A frame whose fields were not valid UTF-8 was skipped.
    InvalidUtf8,
}

/// The parser state. Feed it bytes as they arrive; it never holds more than one frame.
#[derive(Debug)]
pub struct SseParser {
    max_frame: usize,
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF in the next chunk is part of CRLF.
    after_cr: bool,
    /// The first bytes are checked for a BOM once.
    bom_checked: bool,
    bom_prefix: Vec<u8>,
    data: String,
    has_data: bool,
    event_type: String,
    last_event_id: Option<String>,
    /// Field bytes accumulated for the current frame.
    frame_bytes: usize,
    /// The current frame went over the limit: skip it until its blank line.
    oversize: bool,
    /// While skipping: the current line had bytes (so its terminator is not a blank line).
    oversize_line_has_bytes: bool,
    invalid_utf8: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl SseParser {
    /// A parser that skips frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.max(1),
            line: Vec::new(),
            after_cr: false,
            bom_checked: false,
            bom_prefix: Vec::new(),
            data: String::new(),
            has_data: false,
            event_type: String::new(),
            last_event_id: None,
            frame_bytes: 0,
            oversize: false,
            oversize_line_has_bytes: false,
            invalid_utf8: false,
        }
    }

    /// The last event id seen (for `Last-Event-ID` on reconnect).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Forget the partial frame (on reconnect), keeping the last event id.
    pub fn reset_frame(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.bom_checked = false;
        self.bom_prefix.clear();
        self.clear_frame();
    }

    /// Feed bytes; every complete item is passed to `emit` in order.
    pub fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(SseItem)) {
        if !self.bom_checked {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let need = BOM.len() - self.bom_prefix.len();
            let take = need.min(bytes.len());
            self.bom_prefix.extend_from_slice(&bytes[..take]);
            if BOM.starts_with(&self.bom_prefix) {
                if self.bom_prefix.len() < BOM.len() {
                    return; // wait for more bytes to decide
                }
                bytes = &bytes[take..];
                self.bom_prefix.clear();
                self.bom_checked = true;
            } else {
                // Not a BOM: replay what was held back, then continue normally.
                self.bom_checked = true;
                let held = std::mem::take(&mut self.bom_prefix);
                let held_len = held.len() - take;
                self.feed_lines(&held[..held_len], emit);
            }
        }
        self.feed_lines(bytes, emit);
    }

    fn feed_lines(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(SseItem)) {
        if self.after_cr {
            self.after_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', bytes) {
            self.push_line_bytes(&bytes[..pos]);
            self.finish_line(emit);
            if bytes[pos] == b'\r' {
                match bytes.get(pos + 1) {
                    Some(b'\n') => bytes = &bytes[pos + 2..],
                    Some(_) => bytes = &bytes[pos + 1..],
                    None => {
                        self.after_cr = true;
                        bytes = &[];
                    }
                }
            } else {
                bytes = &bytes[pos + 1..];
            }
        }
        self.push_line_bytes(bytes);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.oversize {
            self.frame_bytes += bytes.len();
            self.oversize_line_has_bytes |= !bytes.is_empty();
            return;
        }
        if self.frame_bytes + self.line.len() + bytes.len() > self.max_frame {
            self.frame_bytes += self.line.len() + bytes.len();
            self.line = Vec::new();
            self.data = String::new();
            self.oversize = true;
            self.oversize_line_has_bytes = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn finish_line(&mut self, emit: &mut impl FnMut(SseItem)) {
        if self.oversize {
            if self.oversize_line_has_bytes {
                self.oversize_line_has_bytes = false;
            } else {
                emit(SseItem::Oversize {
                    bytes: self.frame_bytes,
                });
                self.clear_frame();
            }
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(emit);
        } else {
            self.frame_bytes += line.len();
            self.process_field(&line, emit);
        }
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    fn process_field(&mut self, line: &[u8], emit: &mut impl FnMut(SseItem)) {
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let Ok(value) = std::str::from_utf8(value) else {
            self.invalid_utf8 = true;
            return;
        };
        match name {
            b"data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            b"id" if !value.contains('\0') => {
                self.last_event_id = Some(value.to_string());
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    emit(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, emit: &mut impl FnMut(SseItem)) {
        if self.invalid_utf8 {
            emit(SseItem::InvalidUtf8);
        } else if self.has_data {
            if self.data.ends_with('\n') {
                self.data.pop();
            }
            let event = if self.event_type.is_empty() {
                "message".to_string()
            } else {
                std::mem::take(&mut self.event_type)
            };
            emit(SseItem::Event(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
                id: self.last_event_id.clone(),
            }));
        }
        self.clear_frame();
    }

    fn clear_frame(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event_type.clear();
        self.frame_bytes = 0;
        self.oversize = false;
        self.oversize_line_has_bytes = false;
        self.invalid_utf8 = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8], max: usize) -> Vec<SseItem> {
        let mut parser = SseParser::new(max);
        let mut items = Vec::new();
        parser.feed(input, &mut |i| items.push(i));
        items
    }

    fn event(event: &str, data: &str, id: Option<&str>) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_string),
        })
    }

    #[test]
    fn comments_fields_without_colon_and_multiline_data() {
        let items = parse(
            b": hello\ndata\ndata:a\ndata: b\n\nevent: ping\ndata:\n\n",
            1024,
        );
        assert_eq!(
            items,
            [event("message", "\na\nb", None), event("ping", "", None)]
        );
    }

    #[test]
    fn frames_without_data_are_not_dispatched() {
        assert_eq!(parse(b"event: x\n\n: only a comment\n\n", 1024), []);
    }

    #[test]
    fn ids_persist_and_ids_with_nul_are_ignored() {
        let items = parse(b"id: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\n", 1024);
        assert_eq!(
            items,
            [
                event("message", "a", Some("7")),
                event("message", "b", Some("7")),
                event("message", "c", Some("7"))
            ]
        );
    }

    #[test]
    fn retry_needs_digits() {
        assert_eq!(
            parse(b"retry: 1500\nretry: 1.5\nretry: x\n\n", 1024),
            [SseItem::Retry(1500)]
        );
    }

    #[test]
    fn a_crlf_split_across_feeds_is_one_line_ending() {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        parser.feed(b"data: a\r", &mut |i| items.push(i));
        parser.feed(b"\n\r", &mut |i| items.push(i));
        parser.feed(b"\ndata: b\r\r", &mut |i| items.push(i));
        assert_eq!(
            items,
            [event("message", "a", None), event("message", "b", None)]
        );
    }

    #[test]
    fn oversize_frames_are_skipped_and_reported_then_parsing_resumes() {
        let mut input = b"data: ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend(b"\ndata: more\n\ndata: ok\n\n");
        let items = parse(&input, 50);
        assert!(
            matches!(items[0], SseItem::Oversize { bytes } if bytes > 50),
            "{items:?}"
        );
        assert_eq!(items[1], event("message", "ok", None));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn invalid_utf8_frames_are_skipped_and_reported() {
        let items = parse(b"data: \xff\xfe\n\ndata: fine\n\n", 1024);
        assert_eq!(
            items,
            [SseItem::InvalidUtf8, event("message", "fine", None)]
        );
    }

    #[test]
    fn a_bom_split_across_feeds_is_removed_once() {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        for chunk in [
            &b"\xEF"[..],
            b"\xBB",
            b"\xBFdata: a\n\n",
            b"\xEF\xBB\xBFdata: b\n\n",
        ] {
            parser.feed(chunk, &mut |i| items.push(i));
        }
        // Only the stream's first BOM is special; a later one is part of a field name.
        assert_eq!(items, [event("message", "a", None)]);
    }

    #[test]
    fn a_partial_bom_prefix_is_replayed_as_data() {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        parser.feed(b"\xEF", &mut |i| items.push(i));
        parser.feed(b"data: a\n\n", &mut |i| items.push(i));
        // "\xEFdata" is not the field "data": nothing is dispatched, nothing panics.
        assert_eq!(items, []);
    }
}
