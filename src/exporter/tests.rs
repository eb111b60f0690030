//! Unit tests of the transport's own pure piece, the response excerpt. The policy helpers and the
//! configuration are tested in their modules; the HTTP path in `tests/transport.rs`.

use super::*;

#[test]
fn excerpt_is_short_and_printable() {
    assert_eq!(excerpt(b""), "(empty body)");
    assert_eq!(excerpt(b"bad request\n"), "bad request\\n");
    let long = vec![b'x'; 500];
    let text = excerpt(&long);
    assert_eq!(text.chars().filter(|c| *c == 'x').count(), BODY_EXCERPT);
    assert!(text.ends_with('…'));
    assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
}
