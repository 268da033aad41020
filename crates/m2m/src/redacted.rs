//! Secret values given on the command line (keys, JWKs): zeroed on drop, never in `Debug` output
//! nor in clap's error messages.

use std::fmt;
use zeroize::Zeroizing;

/// A command-line value that is secret: zeroed on drop, `Debug` redacted, never echoed by clap errors.
#[derive(Clone)]
pub struct Redacted(Zeroizing<String>);

impl Redacted {
    /// The value, for the one place that parses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The clap value parser: never fails, so clap never repeats the value in an error; it is
/// checked later without echo.
pub fn redacted(s: &str) -> Result<Redacted, std::convert::Infallible> {
    Ok(Redacted(Zeroizing::new(s.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let r = redacted("1a2b3c4d").unwrap();
        assert_eq!(format!("{r:?}"), "<redacted>");
        assert_eq!(r.expose(), "1a2b3c4d");
    }
}
