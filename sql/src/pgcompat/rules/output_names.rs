//! Output column names as Postgres gives them (its `FigureColname`):
//! DataFusion names a computed column after its whole expression, Postgres
//! after the function, cast type or keyword, and clients look columns up
//! by those names. `SELECT count(*), 1::int2, 1 + 1 FROM t` becomes
//! `SELECT count(*) AS "count", 1::INT2 AS "int2", 1 + 1 AS "?column?"
//! FROM t`; repeated names get `_2`, `_3`, ... (DataFusion wants them
//! unique).

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Query, Select, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};

use super::normalized;

/// Gives every computed output column the name Postgres gives it (`count`
/// for `count(*)`, `?column?` for `1 + 1`, `int4` for `1::int4`, ...), where
/// DataFusion would name it after the whole expression. Columns that would
/// share a name get a `_2`, `_3`, ... suffix: DataFusion needs unique names
/// where Postgres allows repeats.
pub(crate) fn name_output_columns(stmt: &mut Statement) {
    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            name_set_expr(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Namer);
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        // The first branch names a set operation's columns.
        SetExpr::SetOperation { left, .. } => name_set_expr(left),
        SetExpr::Query(q) => name_set_expr(&mut q.body),
        _ => {}
    }
}

fn name_select(select: &mut Select) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in &mut select.projection {
        let name = match item {
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(normalized(id)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => ids.last().map(normalized),
            SelectItem::UnnamedExpr(e) => {
                let name = figure_name(e).unwrap_or_else(|| "?column?".to_string());
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', name.clone()),
                };
                Some(name)
            }
            SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
            _ => None,
        };
        let Some(name) = name else { continue };
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            let unique = format!("{name}_{n}");
            match item {
                SelectItem::ExprWithAlias { alias, .. } => {
                    *alias = Ident::with_quote('"', unique);
                }
                SelectItem::UnnamedExpr(e) => {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::with_quote('"', unique),
                    };
                }
                _ => {}
            }
        }
    }
}

/// The name Postgres gives an output column computed by `e` (its
/// `FigureColname`), or `None` for `?column?`.
fn figure_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(normalized(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(normalized),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(normalized),
        Expr::Cast {
            expr, data_type, ..
        } => figure_name_strong(expr).or_else(|| Some(type_name(data_type))),
        Expr::Nested(inner) => figure_name(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        Expr::AtTimeZone { .. } => Some("timezone".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::TypedString(t) => Some(type_name(&t.data_type)),
        Expr::CompoundFieldAccess { root, .. } => figure_name(root),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => match s.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => Some(normalized(alias)),
                Some(SelectItem::UnnamedExpr(e)) => figure_name(e),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// A name from a column or function only (what a cast defers to).
fn figure_name_strong(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => figure_name(e),
        Expr::Nested(inner) => figure_name_strong(inner),
        Expr::Cast { .. } => figure_name(e),
        _ => None,
    }
}

/// A SQL type as Postgres names it in `pg_type` (`int4`, `float8`, ...).
fn type_name(t: &datafusion::sql::sqlparser::ast::DataType) -> String {
    use datafusion::sql::sqlparser::ast::{DataType as T, TimezoneInfo};
    match t {
        T::SmallInt(_) | T::Int2(_) => "int2".into(),
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4".into(),
        T::BigInt(_) | T::Int8(_) => "int8".into(),
        T::Real | T::Float4 => "float4".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float(_) => "float8".into(),
        T::Numeric(_) | T::Decimal(_) | T::Dec(_) => "numeric".into(),
        T::Text | T::String(_) => "text".into(),
        T::Varchar(_) | T::CharacterVarying(_) => "varchar".into(),
        T::Char(_) | T::Character(_) => "bpchar".into(),
        T::Boolean | T::Bool => "bool".into(),
        T::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timestamptz".into(),
        T::Timestamp(_, _) => "timestamp".into(),
        T::Date => "date".into(),
        T::Time(_, _) => "time".into(),
        T::Interval { .. } => "interval".into(),
        T::Bytea => "bytea".into(),
        T::Uuid => "uuid".into(),
        T::JSON => "json".into(),
        T::JSONB => "jsonb".into(),
        T::Custom(name, _) => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalized)
            .unwrap_or_else(|| "?column?".into()),
        other => other.to_string().to_lowercase(),
    }
}
