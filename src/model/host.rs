//! Host names as Istio compares them (`host.Name`): a concrete name (`reviews.ns.svc.cluster.local`)
//! or a wildcard (`*`, `*.example.com`). One home for the two questions every rule asks:
//! do two hosts overlap (`matches`), and is every name one covers covered by another
//! (`subset_of`). It holds no other rule (short-name resolution is the push context's).

/// A host name or wildcard pattern, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hostname<'a>(&'a str);

impl<'a> From<&'a str> for Hostname<'a> {
    fn from(s: &'a str) -> Self {
        Hostname(s)
    }
}

impl<'a> Hostname<'a> {
    pub fn new(s: &'a str) -> Self {
        Hostname(s)
    }

    /// `*` or `*.suffix`.
    pub fn is_wildcard(self) -> bool {
        self.0.starts_with('*')
    }

    /// Whether some name is covered by both (Istio's `host.Name.Matches`): `*.foo.com` and
    /// `bar.foo.com`, `*.com` and `*.foo.com`, or two equal names.
    pub fn matches<'b>(self, other: impl Into<Hostname<'b>>) -> bool {
        let (a, b) = (self.0, other.into().0);
        match (self.is_wildcard(), Hostname(b).is_wildcard()) {
            (true, true) => {
                if a.len() < b.len() {
                    b[1..].ends_with(&a[1..])
                } else {
                    a[1..].ends_with(&b[1..])
                }
            }
            (true, false) => b.ends_with(&a[1..]),
            (false, true) => a.ends_with(&b[1..]),
            (false, false) => a == b,
        }
    }

    /// Whether every name this covers is covered by `sup` (Istio's `host.Name.SubsetOf`); for
    /// a concrete name: whether the pattern `sup` matches it.
    pub fn subset_of<'b>(self, sup: impl Into<Hostname<'b>>) -> bool {
        let (sub, sup) = (self.0, sup.into().0);
        match (self.is_wildcard(), Hostname(sup).is_wildcard()) {
            (true, true) => sub.len() >= sup.len() && sub[1..].ends_with(&sup[1..]),
            (true, false) => false,
            (false, true) => sub.ends_with(&sup[1..]),
            (false, false) => sub == sup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hostname as H;

    #[test]
    fn overlap() {
        assert!(H::new("*.foo.com").matches("bar.foo.com"));
        assert!(H::new("bar.foo.com").matches("*.foo.com"));
        assert!(H::new("*.com").matches("*.foo.com"));
        assert!(H::new("*").matches("anything.example"));
        assert!(H::new("a.com").matches("a.com"));
        assert!(!H::new("a.com").matches("b.com"));
        assert!(!H::new("*.foo.com").matches("foo.com"));
    }

    #[test]
    fn subset() {
        assert!(H::new("login.bookinfo.com").subset_of("*.bookinfo.com"));
        assert!(H::new("*.a.bookinfo.com").subset_of("*.bookinfo.com"));
        assert!(!H::new("*.bookinfo.com").subset_of("*.a.bookinfo.com"));
        assert!(!H::new("*.bookinfo.com").subset_of("login.bookinfo.com"));
        assert!(H::new("reviews.default.svc.cluster.local").subset_of("*"));
        assert!(H::new("*.default.svc.cluster.local").subset_of("*"));
        assert!(!H::new("productpage").subset_of("reviews"));
    }
}
