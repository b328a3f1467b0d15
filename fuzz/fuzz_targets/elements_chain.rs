//! PostHog's `elements_chain`: arbitrary text through the parser and the element naming.
//!
//! Invariants: never panics; every bound holds (elements, attributes, classes, value and name
//! lengths); a `text` value survives being written back the way posthog-js writes it; a
//! target's label is bounded and never masked text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::sources::elements_chain::{
    MAX_ATTRIBUTES, MAX_CLASSES, MAX_ELEMENTS, MAX_NAME_CHARS, MAX_VALUE_CHARS, parse,
};
use livectx::sources::naming::{MAX_LABEL_CHARS, name_target};

fuzz_target!(|input: &[u8]| {
    let chain = String::from_utf8_lossy(input);
    let elements = parse(&chain);
    assert!(elements.len() <= MAX_ELEMENTS);
    for element in &elements {
        assert!(element.tag.chars().count() <= MAX_NAME_CHARS);
        assert!(element.classes.len() <= MAX_CLASSES);
        assert!(element.attributes.len() <= MAX_ATTRIBUTES);
        for class in &element.classes {
            assert!(class.chars().count() <= MAX_NAME_CHARS);
        }
        for (name, value) in &element.attributes {
            assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
            assert!(value.chars().count() <= MAX_VALUE_CHARS);
        }
        for value in [&element.text, &element.href, &element.attr_id]
            .into_iter()
            .flatten()
        {
            assert!(value.chars().count() <= MAX_VALUE_CHARS);
        }
        // Written back as posthog-js does (`"` escaped), a text reads the same. A text ending
        // in a backslash is ambiguous in the format itself, so it is left out.
        if let Some(text) = &element.text
            && !text.ends_with('\\')
        {
            let written = format!("span:text=\"{}\"", text.replace('"', "\\\""));
            let reread = parse(&written);
            assert_eq!(reread.len(), 1, "{written}");
            assert_eq!(reread[0].text.as_deref(), Some(text.as_str()), "{written}");
        }
    }
    for want_form in [false, true] {
        let target = name_target(&elements, want_form);
        if let Some(label) = &target.label {
            assert!(!label.trim().is_empty());
            assert!(label.chars().count() <= MAX_LABEL_CHARS + 1, "{label}");
            assert!(
                !label.contains("***"),
                "masked text used as a label: {label}"
            );
            assert!(
                !label.contains('"'),
                "a quote would break the phrase: {label}"
            );
        }
    }
});
