//! Rows into Rust values: [`FromRow`], and `query_as` on the pool and on a connection.

use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::Row;

use crate::error::PoolError;
use crate::{Pool, PooledConnection};

/// A value made from one row. Implemented for tuples of up to 8 columns (each any type
/// tokio-postgres reads, `Option` for a nullable column); implement it for your own structs:
///
/// ```
/// use holdfast::FromRow;
/// use holdfast::tokio_postgres;
/// struct Note { id: i64, body: String }
/// impl FromRow for Note {
///     fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
///         Ok(Note { id: row.try_get("id")?, body: row.try_get("body")? })
///     }
/// }
/// ```
pub trait FromRow: Sized {
    /// Reads the row; a column missing or of another type is an error naming it.
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
                Ok(($(row.try_get::<_, $t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

fn convert<T: FromRow>(rows: Vec<Row>) -> Result<Vec<T>, PoolError> {
    rows.iter()
        .map(|row| T::from_row(row).map_err(PoolError::Database))
        .collect()
}

impl Pool {
    /// Like [`query`](Self::query), each row made into a `T`:
    /// `pool.query_as::<(i64, String)>("SELECT id, body FROM notes", &[])`.
    pub async fn query_as<T: FromRow>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, PoolError> {
        convert(self.query(sql, params).await?)
    }
}

impl PooledConnection {
    /// Like [`query_cached`](Self::query_cached), each row made into a `T`.
    pub async fn query_as<T: FromRow>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, PoolError> {
        convert(self.query_cached(sql, params).await?)
    }
}
