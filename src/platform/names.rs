//! The names meshplane gives what it makes on a PostgreSQL engine: a
//! product's schema, the role that owns it, its pipelines' login, and each
//! consumer domain's login (pure).
//!
//! Names are made from the domain's and the product's names, which are
//! DNS labels (lower-case letters, digits, `-`; never `_`), joined with `__`:
//! a name therefore says which domain and product it is of, and two
//! (domain, product) pairs never share one (`a-b`/`c` is `mp_a-b__c`, `a`/`b-c`
//! is `mp_a__b-c`). PostgreSQL keeps 63 bytes of an identifier; a longer
//! name keeps its first bytes and ends in a digest of the whole, so it stays
//! apart from every other. In SQL a name is always quoted ([`quoted`]).

use sha2::{Digest, Sha256};

/// The most bytes of an identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER: usize = 63;

/// Hex digits of the digest a shortened name ends in.
const DIGEST_DIGITS: usize = 16;

/// What a product has on the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductNames {
    /// The schema its tables are in.
    pub schema: String,
    /// The role (no login) that owns the schema and its tables.
    pub owner: String,
    /// The login its pipelines use, a member of `owner`.
    pub writer: String,
}

/// The names of product `product` of domain `domain`.
pub fn product(domain: &str, product: &str) -> ProductNames {
    let base = format!("mp_{domain}__{product}");
    ProductNames { schema: fit(&base), owner: fit(&format!("{base}__owner")), writer: fit(&format!("{base}__writer")) }
}

/// The login of consumer domain `consumer` for product `product` of
/// domain `domain`: one per (consumer, product), so a revoked grant is a
/// login gone, not a privilege to find among others.
pub fn reader(domain: &str, product: &str, consumer: &str) -> String {
    fit(&format!("mp_{domain}__{product}__reader__{consumer}"))
}

/// `name` as PostgreSQL keeps it: whole when it fits, else its first bytes
/// and `_` and a digest of the whole name.
fn fit(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER {
        return name.to_string();
    }
    let digest: String = Sha256::digest(name.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    // Names are ASCII (DNS labels), so any byte is a character boundary.
    let keep = MAX_IDENTIFIER - 1 - DIGEST_DIGITS;
    format!("{}_{}", &name[..keep], &digest[..DIGEST_DIGITS])
}

/// `name` quoted as an SQL identifier: used verbatim, whatever it holds.
pub fn quoted(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_s_names_say_whose_they_are() {
        let names = product("sales", "orders");
        assert_eq!(names.schema, "mp_sales__orders");
        assert_eq!(names.owner, "mp_sales__orders__owner");
        assert_eq!(names.writer, "mp_sales__orders__writer");
        assert_eq!(reader("sales", "orders", "crm"), "mp_sales__orders__reader__crm");
    }

    #[test]
    fn pairs_that_read_alike_when_joined_get_different_names() {
        assert_ne!(product("a-b", "c"), product("a", "b-c"));
        assert_ne!(product("a-b", "c").schema, product("a", "b-c").schema);
        assert_ne!(reader("a", "b", "c-d"), reader("a", "b-c", "d"));
    }

    #[test]
    fn long_names_fit_and_stay_apart() {
        // The longest names a DataDomain (63) and a DataProduct (30) may have.
        let domain = "d".repeat(63);
        let (p1, p2) = (format!("{}1", "p".repeat(29)), format!("{}2", "p".repeat(29)));
        let (a, b) = (product(&domain, &p1), product(&domain, &p2));
        for name in [&a.schema, &a.owner, &a.writer, &b.schema, &reader(&domain, &p1, &domain)] {
            assert!(name.len() <= MAX_IDENTIFIER, "{name} is {} bytes", name.len());
        }
        assert_eq!(a.schema.len(), MAX_IDENTIFIER);
        assert_ne!(a.schema, b.schema, "names that differ only past the kept bytes differ in their digest");
        assert_ne!(a.owner, a.writer);
        assert_eq!(product(&domain, &p1), a, "the same inputs give the same names, pass after pass");
    }

    #[test]
    fn a_quoted_name_cannot_break_out_of_its_quotes() {
        assert_eq!(quoted("mp_a-b__c"), "\"mp_a-b__c\"");
        assert_eq!(quoted("x\"; DROP SCHEMA y; --"), "\"x\"\"; DROP SCHEMA y; --\"");
    }
}
