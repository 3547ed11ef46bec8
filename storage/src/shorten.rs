//! Bounded quoting of outside text in messages: an error answer or a log line must not grow
//! with what a client sent (a label value of a megabyte, a many-to-many match listing every
//! series).

use std::borrow::Cow;

/// `text` cut to at most `max_bytes` (at a character boundary), followed by how long it was.
pub fn shortened(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &text[..cut], text.len()))
}

#[cfg(test)]
mod tests {
    use super::shortened;

    #[test]
    fn cuts_long_text_at_a_character_boundary() {
        assert_eq!(shortened("short", 10), "short");
        assert_eq!(shortened("ééé", 3), "é… (6 bytes in all)");
    }
}
