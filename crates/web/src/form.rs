//! A posted form's fields (`application/x-www-form-urlencoded`), kept in order with repeats (one
//! `events` per ticked box).

/// The fields of a posted form.
#[derive(Debug, Clone, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Parses a body; bytes that are not UTF-8 become U+FFFD, as browsers never send them.
    pub fn parse(body: &[u8]) -> FormFields {
        FormFields(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of a field, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// Whether a field was sent (a ticked checkbox).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_escapes_are_kept() {
        let form = FormFields::parse(b"events=contact.created&events=deal.won&url=http%3A%2F%2Fa%2Fb&active=on&x=a+b");
        assert_eq!(form.all("events"), ["contact.created", "deal.won"]);
        assert_eq!(form.get("url"), "http://a/b");
        assert_eq!(form.get("x"), "a b");
        assert!(form.has("active") && !form.has("secret"));
        assert_eq!(form.get("secret"), "");
    }
}
