//! The SQL a controller runs beside the tasks inside a queue transaction
//! (workflows: `QueueStore::transaction`), written once for both backends.
//!
//! Statements use SQLite's numbered placeholders (`?1`, `?2`, …), which the
//! PostgreSQL backend rewrites to `$1`, `$2`; otherwise they keep to what
//! both databases accept (upserts with `ON CONFLICT`, `CAST(.. AS BIGINT)`
//! where PostgreSQL would widen a sum to NUMERIC, `CAST(?1 AS TEXT)` where it
//! cannot infer a parameter's type). What differs (DDL, row locks) asks
//! [`Sql::dialect`]. Values travel as [`SqlValue`]s and are converted to
//! the column's type at the database.

use std::borrow::Cow;

use crate::store::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// A connection (inside a transaction) that runs portable statements.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Run one statement; returns the rows it changed.
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64>;
    /// Run one query; returns its rows.
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<SqlRow>>;
    /// Run statements separated by `;`, without parameters (schema set-up).
    fn batch(&self, sql: &str) -> Result<()>;

    /// The first row of `query`, if any.
    fn query_opt(&self, sql: &str, params: &[SqlValue]) -> Result<Option<SqlRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// `sql_params![a, b, c]`: the arguments as a `&[SqlValue]`.
#[macro_export]
macro_rules! sql_params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::sql::SqlValue::from($value)),*][..]
    };
}

/// One row, read by column index with the type the caller expects.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow(pub Vec<SqlValue>);

impl SqlRow {
    fn at(&self, index: usize) -> Result<&SqlValue> {
        self.0.get(index).ok_or_else(|| {
            StoreError::Invalid(format!(
                "the row has {} columns; column {index} was asked for",
                self.0.len()
            ))
        })
    }

    fn wrong(&self, index: usize, wanted: &str) -> StoreError {
        StoreError::Invalid(format!(
            "column {index} is {:?}, not {wanted}",
            self.0.get(index)
        ))
    }

    pub fn opt_i64(&self, index: usize) -> Result<Option<i64>> {
        match self.at(index)? {
            SqlValue::Null => Ok(None),
            SqlValue::Int(i) => Ok(Some(*i)),
            SqlValue::Bool(b) => Ok(Some(*b as i64)),
            _ => Err(self.wrong(index, "an integer")),
        }
    }

    pub fn i64(&self, index: usize) -> Result<i64> {
        self.opt_i64(index)?
            .ok_or_else(|| self.wrong(index, "an integer"))
    }

    pub fn opt_f64(&self, index: usize) -> Result<Option<f64>> {
        match self.at(index)? {
            SqlValue::Null => Ok(None),
            SqlValue::Real(f) => Ok(Some(*f)),
            SqlValue::Int(i) => Ok(Some(*i as f64)),
            _ => Err(self.wrong(index, "a number")),
        }
    }

    pub fn f64(&self, index: usize) -> Result<f64> {
        self.opt_f64(index)?
            .ok_or_else(|| self.wrong(index, "a number"))
    }

    pub fn opt_bool(&self, index: usize) -> Result<Option<bool>> {
        match self.at(index)? {
            SqlValue::Null => Ok(None),
            SqlValue::Bool(b) => Ok(Some(*b)),
            SqlValue::Int(i) => Ok(Some(*i != 0)),
            _ => Err(self.wrong(index, "a boolean")),
        }
    }

    pub fn bool(&self, index: usize) -> Result<bool> {
        self.opt_bool(index)?
            .ok_or_else(|| self.wrong(index, "a boolean"))
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>> {
        match self.at(index)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(t) => Ok(Some(t.clone())),
            _ => Err(self.wrong(index, "text")),
        }
    }

    pub fn text(&self, index: usize) -> Result<String> {
        self.opt_text(index)?
            .ok_or_else(|| self.wrong(index, "text"))
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for SqlValue {
    fn from(v: u32) -> Self {
        Self::Int(v as i64)
    }
}

impl From<usize> for SqlValue {
    fn from(v: usize) -> Self {
        Self::Int(v as i64)
    }
}

impl From<u64> for SqlValue {
    fn from(v: u64) -> Self {
        Self::Int(v.min(i64::MAX as u64) as i64)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        Self::Real(v)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl<T: Clone + Into<SqlValue>> From<&Option<T>> for SqlValue {
    fn from(v: &Option<T>) -> Self {
        v.clone().map_or(Self::Null, Into::into)
    }
}

// ---- SQLite ----

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Self::Null => ToSqlOutput::Owned(Value::Null),
            Self::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Self::Real(f) => ToSqlOutput::Owned(Value::Real(*f)),
            Self::Bool(b) => ToSqlOutput::Owned(Value::Integer(*b as i64)),
            Self::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<SqlRow> {
    use rusqlite::types::ValueRef;
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(match row.get_ref(i)? {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Int(i),
            ValueRef::Real(f) => SqlValue::Real(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                SqlValue::Text(String::from_utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(SqlRow(values))
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64> {
        let mut statement = self.prepare_cached(sql)?;
        Ok(statement.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<SqlRow>> {
        let mut statement = self.prepare_cached(sql)?;
        let columns = statement.column_count();
        let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
            sqlite_row(row, columns)
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }
}

// ---- PostgreSQL ----

/// `?N` placeholders as PostgreSQL's `$N` (statements never hold a `?`
/// inside a string literal).
pub fn postgres_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(sql.replace('?', "$"))
}

/// Parameters as tokio-postgres takes them.
pub fn postgres_params(params: &[SqlValue]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

mod postgres {
    use bytes::BytesMut;
    use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

    use super::SqlValue;

    type BoxError = Box<dyn std::error::Error + Sync + Send>;

    /// Converted to the type the statement gives the parameter (the
    /// column's, usually), so one value fits INTEGER, BIGINT or DOUBLE.
    impl ToSql for SqlValue {
        fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
            match (self, ty) {
                (Self::Null, _) => Ok(IsNull::Yes),
                (Self::Int(i), &Type::INT8) => i.to_sql(ty, out),
                (Self::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
                (Self::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
                (Self::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
                (Self::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
                (Self::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().to_sql(ty, out),
                (Self::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
                (Self::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
                (Self::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
                (Self::Bool(b), &Type::INT8) => (*b as i64).to_sql(ty, out),
                (Self::Bool(b), &Type::INT4) => (*b as i32).to_sql(ty, out),
                (Self::Text(t), _) if <&str as ToSql>::accepts(ty) => t.as_str().to_sql(ty, out),
                (value, ty) => Err(format!("cannot pass {value:?} as a {ty}").into()),
            }
        }

        fn accepts(_: &Type) -> bool {
            true
        }

        to_sql_checked!();
    }

    impl<'a> FromSql<'a> for SqlValue {
        fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
            Ok(match *ty {
                Type::INT8 => Self::Int(i64::from_sql(ty, raw)?),
                Type::INT4 => Self::Int(i32::from_sql(ty, raw)? as i64),
                Type::INT2 => Self::Int(i16::from_sql(ty, raw)? as i64),
                Type::FLOAT8 => Self::Real(f64::from_sql(ty, raw)?),
                Type::FLOAT4 => Self::Real(f32::from_sql(ty, raw)? as f64),
                Type::BOOL => Self::Bool(bool::from_sql(ty, raw)?),
                _ => Self::Text(<String as FromSql>::from_sql(ty, raw)?),
            })
        }

        fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
            Ok(Self::Null)
        }

        fn accepts(ty: &Type) -> bool {
            matches!(
                *ty,
                Type::INT8 | Type::INT4 | Type::INT2 | Type::FLOAT8 | Type::FLOAT4 | Type::BOOL
            ) || <String as FromSql>::accepts(ty)
        }
    }
}

/// A PostgreSQL row as an [`SqlRow`].
pub(crate) fn postgres_row(row: &tokio_postgres::Row) -> Result<SqlRow> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, SqlValue>(i)
                .map_err(|e| StoreError::Postgres(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .map(SqlRow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
        assert!(matches!(
            postgres_placeholders("SELECT 1"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn sqlite_round_trips_every_kind_of_value() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let conn: &dyn Sql = &conn;
        conn.batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b INTEGER, n TEXT)")
            .unwrap();
        let changed = conn
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
                sql_params![7i64, 2.5, "x", true, None::<String>],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let row = conn
            .query_opt("SELECT i, r, s, b, n FROM t WHERE s = ?1", sql_params!["x"])
            .unwrap()
            .unwrap();
        assert_eq!(row.i64(0).unwrap(), 7);
        assert_eq!(row.f64(1).unwrap(), 2.5);
        assert_eq!(row.text(2).unwrap(), "x");
        assert!(row.bool(3).unwrap());
        assert_eq!(row.opt_text(4).unwrap(), None);
        let wrong = row.text(0).unwrap_err().to_string();
        assert!(wrong.contains("not text"), "{wrong}");
        assert!(row.i64(9).is_err());
    }
}
