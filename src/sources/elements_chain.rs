//! PostHog's `elements_chain`: the clicked element and its ancestors, serialised as one string.
//!
//! Format (posthog-js `elementsToString`, PostHog `chain_to_elements`): elements joined by `;`,
//! **the event target first**, then its ancestors up to `body`. Each element is `tag`, then
//! `.class` per class, then optionally `:` and `key="value"` pairs with nothing between them
//! (`text`, `href`, `nth-child`, `nth-of-type`, `attr_id`, `attr__<name>`). A `"` inside a
//! value is written `\"`, and `;` may occur inside quotes, so elements split on `;` outside
//! quotes only.
//!
//! Why our own parser: PostHog's reference is a set of regexes that misread edge cases (an
//! empty `text=""` swallows the next pair), and the chain is attacker-controlled input (any
//! browser can post to a public ingest URL). This one is a single bounded pass: it keeps at
//! most [`MAX_ELEMENTS`] elements of [`MAX_ATTRIBUTES`] attributes, cuts every text at
//! [`MAX_VALUE_CHARS`], never panics and never allocates more than those bounds allow.
//! Fuzzed by `fuzz/fuzz_targets/elements_chain.rs`.

/// Elements kept; the naming needs the target and its nearest ancestors only.
pub const MAX_ELEMENTS: usize = 32;
/// Attributes kept per element.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest kept attribute value or text (posthog-js caps `text` at 400).
pub const MAX_VALUE_CHARS: usize = 400;
/// Longest kept tag, class or attribute name.
pub const MAX_NAME_CHARS: usize = 64;
/// Classes kept per element.
pub const MAX_CLASSES: usize = 16;
/// Bytes of the chain read at most; the rest is ignored.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;

/// One element of a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Lower-cased tag name (`a`, `button`, `svg`, ...); empty when the chain gave none.
    pub tag: String,
    pub classes: Vec<String>,
    /// The element's own text, as posthog-js captured it.
    pub text: Option<String>,
    pub href: Option<String>,
    pub nth_child: Option<u32>,
    pub nth_of_type: Option<u32>,
    pub attr_id: Option<String>,
    /// Every other attribute, name without its `attr__` prefix (`aria-label`, `role`, ...).
    pub attributes: Vec<(String, String)>,
}

impl Element {
    /// The value of an HTML attribute by name (`aria-label`, `role`, `type`, ...).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }
}

/// Parse a chain into its elements, target first. Never fails: what cannot be read is skipped.
pub fn parse(chain: &str) -> Vec<Element> {
    let chain = truncate_to_boundary(chain, MAX_CHAIN_BYTES);
    split_elements(chain)
        .filter(|raw| !raw.trim().is_empty())
        .take(MAX_ELEMENTS)
        .map(parse_element)
        .collect()
}

/// The element strings of a chain: split on `;` outside quotes, `\` escaping inside quotes.
fn split_elements(chain: &str) -> impl Iterator<Item = &str> {
    let bytes = chain.as_bytes();
    let mut start = 0;
    let mut pos = 0;
    std::iter::from_fn(move || {
        if start > bytes.len() {
            return None;
        }
        let mut in_quotes = false;
        while pos < bytes.len() {
            match bytes[pos] {
                b'\\' if in_quotes => pos += 1,
                b'"' => in_quotes = !in_quotes,
                b';' if !in_quotes => {
                    let piece = &chain[start..pos];
                    pos += 1;
                    start = pos;
                    return Some(piece);
                }
                _ => {}
            }
            pos += 1;
        }
        // An escape at the very end can step past the last byte.
        let piece = chain.get(start..).unwrap_or("");
        start = bytes.len() + 1;
        Some(piece)
    })
}

fn parse_element(raw: &str) -> Element {
    let raw = raw.trim();
    let (head, pairs) = match raw.find([':', '"']) {
        Some(i) if raw.as_bytes()[i] == b':' => (&raw[..i], &raw[i + 1..]),
        // A quote before any colon: no head, the whole string is pairs (`text="x"` alone).
        Some(_) => ("", raw),
        None => (raw, ""),
    };
    let mut element = Element::default();
    let mut parts = head.split('.');
    // posthog-js writes no `#id` in the head, but CSS-minded producers do: the tag ends there.
    let tag = parts.next().unwrap_or("").split('#').next().unwrap_or("");
    element.tag = bounded(tag.trim(), MAX_NAME_CHARS).to_ascii_lowercase();
    element.classes = parts
        .filter(|c| !c.is_empty())
        .take(MAX_CLASSES)
        .map(|c| bounded(c, MAX_NAME_CHARS))
        .collect();
    for (key, value) in Pairs::new(pairs).take(MAX_ATTRIBUTES * 2) {
        element.set(key, value);
    }
    element
}

impl Element {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "text" => self.text = Some(value),
            "href" => self.href = Some(value),
            "nth-child" => self.nth_child = value.trim().parse().ok(),
            "nth-of-type" => self.nth_of_type = value.trim().parse().ok(),
            "attr_id" => self.attr_id = Some(value),
            "" => {}
            other => {
                let name = other.strip_prefix("attr__").unwrap_or(other);
                if name.is_empty() || self.attributes.len() >= MAX_ATTRIBUTES {
                    return;
                }
                // `attr__class` repeats the classes, and `attr__href`/`attr__id` repeat fields.
                if name == "class" {
                    return;
                }
                let name = bounded(name, MAX_NAME_CHARS).to_ascii_lowercase();
                if let Some(slot) = self.attributes.iter_mut().find(|(k, _)| *k == name) {
                    slot.1 = value;
                } else {
                    self.attributes.push((name, value));
                }
            }
        }
    }
}

/// The `key="value"` pairs of one element, values unescaped (`\"` → `"`) and bounded.
struct Pairs<'a> {
    rest: &'a str,
}

impl<'a> Pairs<'a> {
    fn new(rest: &'a str) -> Self {
        Self { rest }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, String);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let eq_quote = self.rest.find("=\"")?;
            let key = self.rest[..eq_quote].trim();
            let after = &self.rest[eq_quote + 2..];
            let mut value = String::new();
            let mut kept = 0usize;
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                let c = match c {
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    '\\' => match chars.clone().next() {
                        Some((_, '"')) => {
                            chars.next();
                            '"'
                        }
                        _ => '\\',
                    },
                    c => c,
                };
                if kept < MAX_VALUE_CHARS {
                    value.push(c);
                    kept += 1;
                }
            }
            self.rest = after.get(end..).unwrap_or("");
            // A key holding a quote is the tail of a malformed pair; skip it.
            if key.contains('"') {
                continue;
            }
            return Some((bounded_str(key, MAX_NAME_CHARS), value));
        }
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a char boundary.
fn truncate_to_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn bounded_str(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn bounded(text: &str, max_chars: usize) -> String {
    bounded_str(text, max_chars).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posthog_example_with_classes_and_href() {
        let chain = r#"a.test-class.test-class2:attr__class="test-class test-class2"attr__href="http://test.com"href="http://test.com"nth-child="1"nth-of-type="1";span:nth-child="1"nth-of-type="1""#;
        let elements = parse(chain);
        assert_eq!(elements.len(), 2);
        let a = &elements[0];
        assert_eq!(a.tag, "a");
        assert_eq!(a.classes, vec!["test-class", "test-class2"]);
        assert_eq!(a.href.as_deref(), Some("http://test.com"));
        assert_eq!(a.attr("href"), Some("http://test.com"));
        assert_eq!(a.attr("class"), None);
        assert_eq!(a.nth_child, Some(1));
        assert_eq!(a.nth_of_type, Some(1));
        assert_eq!(elements[1].tag, "span");
        assert_eq!(elements[1].nth_child, Some(1));
    }

    #[test]
    fn posthog_example_with_escaped_quote_and_semicolon_inside_quotes() {
        let chain = r#"a.small:data-attr="something \" that; could mess up"href="/a-url"nth-child="1"nth-of-type="0"text="bla bla";button.btn.btn-primary:nth-child="0"nth-of-type="0""#;
        let elements = parse(chain);
        assert_eq!(elements.len(), 2);
        let a = &elements[0];
        assert_eq!(a.tag, "a");
        assert_eq!(a.classes, vec!["small"]);
        assert_eq!(
            a.attr("data-attr"),
            Some("something \" that; could mess up")
        );
        assert_eq!(a.href.as_deref(), Some("/a-url"));
        assert_eq!(a.text.as_deref(), Some("bla bla"));
        assert_eq!(a.nth_of_type, Some(0));
        let button = &elements[1];
        assert_eq!(button.tag, "button");
        assert_eq!(button.classes, vec!["btn", "btn-primary"]);
        assert_eq!(button.nth_child, Some(0));
    }

    #[test]
    fn empty_text_does_not_swallow_the_next_pair() {
        let chain = r#"button.btn:attr__aria-label="Notifications"nth-child="2"nth-of-type="1"text="";nav;body"#;
        let elements = parse(chain);
        assert_eq!(elements.len(), 3);
        assert_eq!(elements[0].attr("aria-label"), Some("Notifications"));
        assert_eq!(elements[0].text.as_deref(), Some(""));
        assert_eq!(elements[0].nth_child, Some(2));
        assert_eq!(elements[1].tag, "nav");
        assert!(elements[1].attributes.is_empty());
        assert_eq!(elements[2].tag, "body");
    }

    #[test]
    fn attributes_are_named_without_prefix_and_lower_cased() {
        let chain = r#"input:attr__Name="project_name"attr__type="text"attr__id="pn"attr_id="pn""#;
        let el = &parse(chain)[0];
        assert_eq!(el.attr("name"), Some("project_name"));
        assert_eq!(el.attr("type"), Some("text"));
        assert_eq!(el.attr_id.as_deref(), Some("pn"));
    }

    #[test]
    fn backslash_not_before_a_quote_is_kept() {
        let el = &parse(r#"span:text="C:\path\file""#)[0];
        assert_eq!(el.text.as_deref(), Some(r"C:\path\file"));
    }

    #[test]
    fn hostile_inputs_are_bounded_and_never_panic() {
        for chain in [
            "",
            ";;;;",
            "\"",
            "a:text=\"unterminated",
            "a:text=\"ends with escape\\",
            "\\",
            ":=\"\"=\"\"",
            "é.ü:ö=\"ß\";",
            "a:\"\"\"=\"x\"",
        ] {
            let _ = parse(chain);
        }
        let many = "div;".repeat(10_000);
        assert_eq!(parse(&many).len(), MAX_ELEMENTS);
        let attrs = format!("div:{}", "attr__x=\"y\"".repeat(10_000));
        assert!(parse(&attrs)[0].attributes.len() <= MAX_ATTRIBUTES);
        let mut distinct = String::from("div:");
        for i in 0..1000 {
            distinct.push_str(&format!("attr__k{i}=\"v\""));
        }
        assert_eq!(parse(&distinct)[0].attributes.len(), MAX_ATTRIBUTES);
        let long = format!("span:text=\"{}\"", "x".repeat(100_000));
        let el = &parse(&long)[0];
        assert_eq!(
            el.text.as_deref().map(|t| t.chars().count()),
            Some(MAX_VALUE_CHARS)
        );
        let classes = format!("div{}", ".c".repeat(1000));
        assert_eq!(parse(&classes)[0].classes.len(), MAX_CLASSES);
    }

    #[test]
    fn pairs_without_a_head() {
        let el = &parse(r#"text="Save""#)[0];
        assert_eq!(el.tag, "");
        assert_eq!(el.text.as_deref(), Some("Save"));
    }
}
