//! Names cast to an oid-alias type must exist, as in Postgres:
//! `'nosuch'::regclass` (and regnamespace, regtype, regproc, `$1::regclass`)
//! fails with `relation "nosuch" does not exist` (42P01) where
//! datafusion-pg-catalog's lookup would answer NULL. `'t'::regclass`
//! becomes `sextant_reg_found('regclass', 't', 't'::regclass)`, which
//! datafusion-pg-catalog's rules then turn into a lookup.

use sextant_sqlstate::SqlState;
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Statement, VisitMut, VisitorMut};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;

use super::call;
use crate::SqlError;

/// Registers `sextant_reg_found`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        FoundFunction::new(),
    ));
}

/// The function [`names_that_must_resolve`] wraps a name's oid in.
const FOUND_FUNCTION: &str = "sextant_reg_found";

/// The oid-alias types whose casts from a name look the name up, and what
/// Postgres says when there is no such name.
const REG_TYPES: &[(&str, SqlState, &str)] = &[
    ("regclass", SqlState::UNDEFINED_TABLE, "relation"),
    ("regnamespace", SqlState::INVALID_SCHEMA_NAME, "schema"),
    ("regtype", SqlState::UNDEFINED_OBJECT, "type"),
    ("regproc", SqlState::UNDEFINED_FUNCTION, "function"),
];

/// `'name'::regclass` (and `$1::regclass`, regnamespace, regtype, regproc)
/// as `sextant_reg_found('regclass', 'name', 'name'::regclass)`:
/// datafusion-pg-catalog then makes the cast a lookup subquery, which is
/// NULL for a name that is not there (or that the user may not see), and
/// the function makes that Postgres' error, `relation "name" does not
/// exist`, rather than NULL in a column declared NOT NULL. A numeric
/// string is an oid already and stays as it is; a `pg_catalog` table's
/// name alone is qualified, as Postgres finds it there first.
pub(crate) fn names_that_must_resolve(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{DataType, Value};
    struct Casts;
    impl VisitorMut for Casts {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Cast {
                expr: operand,
                data_type,
                ..
            } = e
            else {
                return ControlFlow::Continue(());
            };
            let lower = data_type.to_string().to_lowercase();
            let kind = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
            let Some((kind, ..)) = REG_TYPES.iter().find(|(k, ..)| *k == kind) else {
                return ControlFlow::Continue(());
            };
            let Expr::Value(v) = operand.as_ref() else {
                return ControlFlow::Continue(());
            };
            let name = match &v.value {
                Value::SingleQuotedString(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    return ControlFlow::Continue(());
                }
                Value::SingleQuotedString(s) => {
                    let name = operand.as_ref().clone();
                    // Postgres finds a relation in pg_catalog before the
                    // search path; the lookup looks in the current schema.
                    if *kind == "regclass" && PG_CATALOG_TABLES.contains(&s.as_str()) {
                        **operand =
                            Expr::value(Value::SingleQuotedString(format!("pg_catalog.{s}")));
                    }
                    name
                }
                Value::Placeholder(_) => Expr::Cast {
                    kind: datafusion::sql::sqlparser::ast::CastKind::DoubleColon,
                    expr: operand.clone(),
                    data_type: DataType::Text,
                    array: false,
                    format: None,
                },
                _ => return ControlFlow::Continue(()),
            };
            let kind = Expr::value(Value::SingleQuotedString((*kind).to_string()));
            *e = call(FOUND_FUNCTION, vec![kind, name, e.clone()]);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Casts);
}

/// `sextant_reg_found(kind, name, oid)`: the oid, or Postgres' error for a
/// `kind` name that is not there when it is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FoundFunction {
    signature: datafusion::logical_expr::Signature,
}

impl FoundFunction {
    fn new() -> Self {
        use datafusion::logical_expr::{Signature, Volatility};
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for FoundFunction {
    fn name(&self) -> &str {
        FOUND_FUNCTION
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(args[2].clone())
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::Array;
        use datafusion::logical_expr::ColumnarValue;
        let [kind, name, oid] = args.args.as_slice() else {
            return datafusion::common::exec_err!("{FOUND_FUNCTION} takes 3 arguments");
        };
        let oids = oid.to_array(args.number_rows)?;
        let Some(row) = (0..oids.len()).find(|&i| oids.is_null(i)) else {
            return Ok(oid.clone());
        };
        let text = |v: &ColumnarValue| -> datafusion::error::Result<String> {
            let a = datafusion::arrow::compute::cast(
                &v.to_array(args.number_rows)?,
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            let a = datafusion::common::cast::as_string_array(&a)?;
            Ok(if a.is_null(row) {
                String::new()
            } else {
                a.value(row).to_string()
            })
        };
        let kind = text(kind)?;
        let (_, code, what) = REG_TYPES
            .iter()
            .find(|(k, ..)| *k == kind)
            .copied()
            .unwrap_or(("", SqlState::UNDEFINED_OBJECT, "object"));
        Err(datafusion::error::DataFusionError::External(Box::new(
            SqlError::new(code, format!("{what} \"{}\" does not exist", text(name)?)),
        )))
    }
}
