//! The registry's address as its clients see it: for links, token realms, pull specs and
//! printed login commands, one rule everywhere.

use axum::http::{HeaderMap, header};

/// `scheme://host[:port][/path]` for a request: the configured public URL, else the Host
/// the client used (only if it looks like a host, so a hostile header cannot inject).
pub fn public_base(public_url: Option<&str>, https: bool, headers: &HeaderMap) -> String {
    match public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c))
                })
                .unwrap_or("localhost");
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    }
}

/// `host[:port][/path]` of a URL, as `docker login` and pull specs take it.
pub fn registry_host(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path().trim_end_matches('/')
        ),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_public_url_or_a_sane_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(public_base(None, false, &h), "http://127.0.0.1:5000");
        assert_eq!(
            public_base(Some("https://r.example/"), false, &h),
            "https://r.example"
        );
        h.insert(header::HOST, "evil\"/x".parse().unwrap());
        assert_eq!(public_base(None, true, &h), "https://localhost");
        assert_eq!(
            registry_host("https://r.example:8443/reg/"),
            "r.example:8443/reg"
        );
        assert_eq!(registry_host("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
