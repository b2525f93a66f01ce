//! Raw statements that stay prepared on their connection.
//!
//! diesel parses and plans a `sql_query` anew on every call: its `walk_ast` marks it
//! unsafe to cache, so it always runs as the unnamed statement. For a statement run a
//! thousand times a second that is most of what Postgres does (the receipt statement
//! took 0.29 ms to plan and 0.11 ms to run). `prepared(SQL)` is the same raw SQL with
//! binds, without that mark: diesel's statement cache prepares it once per connection,
//! under a name, and Postgres reuses its plan as the connection's `plan_cache_mode`
//! says (see `store::ReadPoolConnection` for why a generic plan is safe there).
//!
//! Each statement is a type of its own (`statement!`), and diesel keys its cache by that
//! type: a call neither writes the text out nor hashes it to find its prepared
//! statement. Keyed by text, that was about 12% of the writer's time at 1,000 msg/s.

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A statement of fixed text. Its type names it in diesel's cache, so one type must
/// have one text and one call site's bind types: declare it with `statement!`.
pub trait Statement: 'static {
    fn sql() -> &'static str;
}

/// Declares a unit type that is the statement `$sql`.
macro_rules! statement {
    ($name:ident = $sql:expr;) => {
        struct $name;
        impl $crate::store::prepared::Statement for $name {
            fn sql() -> &'static str {
                $sql
            }
        }
    };
}
pub(crate) use statement;

/// A statement and its bind values, in order.
#[must_use = "a statement runs only when loaded or executed"]
pub struct Prepared<'a, S> {
    binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'a>>,
    statement: PhantomData<S>,
}

/// Statement `S`, which diesel keeps prepared; bind `$1`, `$2`, ... with `bind`.
pub fn prepared<S: Statement>() -> Prepared<'static, S> {
    Prepared {
        binds: Vec::new(),
        statement: PhantomData,
    }
}

impl<'a, S: Statement> Prepared<'a, S> {
    /// Binds the next parameter as SQL type `ST`. diesel prepares `S` with the bind types
    /// of its first call, so each statement type is bound at one call site, always alike.
    pub fn bind<'b, ST, V>(self, value: V) -> Prepared<'b, S>
    where
        'a: 'b,
        Pg: HasSqlType<ST>,
        ST: Send + 'static,
        V: ToSql<ST, Pg> + Send + 'b,
    {
        // What lives for 'a lives for 'b: the same Vec serves, grown in place.
        let mut binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'b>> = self.binds;
        binds.push(Box::new(Bind::<ST, V> {
            value,
            sql_type: PhantomData,
        }));
        Prepared {
            binds,
            statement: PhantomData,
        }
    }
}

struct Bind<ST, V> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<ST, V> QueryFragment<Pg> for Bind<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        pass.push_bind_param::<ST, V>(&self.value)
    }
}

impl<S: Statement> QueryFragment<Pg> for Prepared<'_, S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Unlike `sql_query`, no `unsafe_to_cache_prepared`: the text never changes.
        // diesel writes each bind's placeholder itself, so the text goes in around them.
        let mut rest = S::sql();
        for (n, bind) in self.binds.iter().enumerate() {
            let (before, after) = split_at_placeholder(rest, n + 1)?;
            out.push_sql(before);
            bind.walk_ast(out.reborrow())?;
            rest = after;
        }
        if split_at_placeholder(rest, self.binds.len() + 1).is_ok() {
            return Err(placeholders_error("more placeholders than binds"));
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// The text before placeholder `$n` and the text after it; placeholders must come in
/// order, `$1` first.
fn split_at_placeholder(sql: &str, n: usize) -> QueryResult<(&str, &str)> {
    let at = sql
        .find('$')
        .ok_or_else(|| placeholders_error("fewer placeholders than binds"))?;
    let (before, from) = sql.split_at(at);
    let digits = from
        .get(1..)
        .unwrap_or("")
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let (number, after) = from.split_at(1 + digits);
    // Parsed, not formatted: this runs for every bind of every execution.
    if number
        .get(1..)
        .and_then(|digits| digits.parse::<usize>().ok())
        != Some(n)
    {
        return Err(placeholders_error("placeholders out of order"));
    }
    Ok((before, after))
}

fn placeholders_error(what: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(format!("prepared statement: {what}").into())
}

impl<S: Statement> QueryId for Prepared<'_, S> {
    // Cached by the statement's type: one text, one set of bind types.
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Statement> Query for Prepared<'_, S> {
    type SqlType = Untyped;
}

impl<Conn, S: Statement> RunQueryDsl<Conn> for Prepared<'_, S> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_in_order() {
        let sql = "SELECT $1::int + $2::int, $10";
        let (before, rest) = split_at_placeholder(sql, 1).unwrap();
        assert_eq!(before, "SELECT ");
        let (before, rest) = split_at_placeholder(rest, 2).unwrap();
        assert_eq!(before, "::int + ");
        assert!(split_at_placeholder(rest, 3).is_err(), "$10 is not $3");
        assert!(split_at_placeholder("SELECT 1", 1).is_err());
    }
}
