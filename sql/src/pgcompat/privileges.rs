//! `has_table_privilege`, `has_any_column_privilege`, `has_schema_privilege`
//! and `has_database_privilege` as Sextant's grants answer them.
//!
//! datafusion-pg-catalog registers these functions as stubs that say yes to
//! everything, and DataFusion would fold them to `true` while it plans.
//! Sextant registers its own ([`register`]): volatile, so they stay in the
//! plan until the guarded planner swaps every call for one bound to the
//! principal that asks, the user directory and the names the session had
//! when the query was planned ([`bind`]); each row is then answered from the
//! grants as they are while the query runs. Unbound (a query of Sextant's
//! own, run for nobody) they say yes, as the stubs did.

use sextant_sqlstate::SqlState;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, BooleanBuilder, StringArray};
use arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use sextant_auth::{Action, Directory, Principal};

use crate::SqlError;

/// What a function asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `has_table_privilege` and `has_any_column_privilege` (Sextant grants
    /// whole tables, so a column privilege is its table's).
    Table,
    Schema,
    Database,
}

const FUNCTIONS: &[(&str, Kind)] = &[
    ("has_table_privilege", Kind::Table),
    ("has_any_column_privilege", Kind::Table),
    ("has_schema_privilege", Kind::Schema),
    ("has_database_privilege", Kind::Database),
];

/// The names a privilege function may be asked about.
#[derive(Debug)]
pub(crate) struct Names {
    /// Sextant's tables (the default schema's).
    pub(crate) tables: Vec<String>,
    /// The default database's schemas.
    pub(crate) schemas: Vec<String>,
    /// The default database (catalog).
    pub(crate) database: String,
}

impl Names {
    /// The names in `state`'s default database.
    pub(crate) fn of(state: &dyn Session) -> Names {
        let Some(state) = state
            .as_any()
            .downcast_ref::<datafusion::execution::SessionState>()
        else {
            return Names {
                tables: vec![],
                schemas: vec![],
                database: String::new(),
            };
        };
        let defaults = &state.config().options().catalog;
        let catalog = state.catalog_list().catalog(&defaults.default_catalog);
        Names {
            tables: catalog
                .as_ref()
                .and_then(|c| c.schema(&defaults.default_schema))
                .map(|s| s.table_names())
                .unwrap_or_default(),
            schemas: catalog.map(|c| c.schema_names()).unwrap_or_default(),
            database: defaults.default_catalog.clone(),
        }
    }
}

/// `plan` with every privilege function answering for `who`; `names` is
/// asked once, if the plan calls one.
pub(crate) fn bind(
    plan: LogicalPlan,
    directory: &Arc<Directory>,
    who: &Principal,
    names: impl FnOnce() -> Names,
) -> datafusion::error::Result<LogicalPlan> {
    let mut names = Some(names);
    let mut bound: Option<Arc<Names>> = None;
    let mut names = || {
        Arc::clone(
            bound.get_or_insert_with(|| Arc::new(names.take().map(|f| f()).expect("asked once"))),
        )
    };
    let plan = plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::ScalarFunction(f) => {
                    let Some((_, kind)) = FUNCTIONS.iter().find(|(n, _)| *n == f.func.name())
                    else {
                        return Ok(Transformed::no(Expr::ScalarFunction(f)));
                    };
                    let answer = Privileges {
                        name: f.func.name().to_string(),
                        signature: signature(),
                        kind: *kind,
                        bound: Some(Bound {
                            directory: Arc::clone(directory),
                            who: who.clone(),
                            names: names(),
                        }),
                    };
                    let udf = Arc::new(ScalarUDF::new_from_impl(answer));
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(udf, f.args),
                    )))
                }
                e => Ok(Transformed::no(e)),
            })
        })
    })?;
    Ok(plan.data)
}

/// Registers the privilege functions, unbound, over datafusion-pg-catalog's.
pub(crate) fn register(ctx: &datafusion::prelude::SessionContext) {
    for (name, kind) in FUNCTIONS {
        ctx.register_udf(ScalarUDF::new_from_impl(Privileges {
            name: name.to_string(),
            signature: signature(),
            kind: *kind,
            bound: None,
        }));
    }
}

/// Postgres' forms: `(object, privilege)` for the current user and
/// `(user, object, privilege)`, each a text. Volatile: the grants may
/// change between planning and running, and only the volatile are not
/// folded into a constant before [`bind`] sees the plan.
fn signature() -> Signature {
    Signature::one_of(
        vec![TypeSignature::String(2), TypeSignature::String(3)],
        Volatility::Volatile,
    )
}

/// One privilege function, bound to the principal that asks or not.
#[derive(Debug)]
struct Privileges {
    name: String,
    signature: Signature,
    kind: Kind,
    bound: Option<Bound>,
}

/// Who asks, and what there is to ask about.
#[derive(Debug)]
struct Bound {
    directory: Arc<Directory>,
    who: Principal,
    names: Arc<Names>,
}

impl PartialEq for Privileges {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.bound, &other.bound) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.who == b.who
                        && Arc::ptr_eq(&a.directory, &b.directory)
                        && Arc::ptr_eq(&a.names, &b.names)
                }
                _ => false,
            }
    }
}

impl Eq for Privileges {}

impl Hash for Privileges {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.bound.as_ref().map(|b| b.who.user()).hash(state);
    }
}

impl ScalarUDFImpl for Privileges {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let texts = args
            .args
            .iter()
            .map(|a| {
                let a = arrow::compute::cast(&a.to_array(rows)?, &DataType::Utf8)?;
                Ok(datafusion::common::cast::as_string_array(&a)?.clone())
            })
            .collect::<datafusion::error::Result<Vec<StringArray>>>()?;
        let mut out = BooleanBuilder::with_capacity(rows);
        for row in 0..rows {
            if texts.iter().any(|t| t.is_null(row)) {
                out.append_null();
                continue;
            }
            let (user, object, privilege) = match texts.as_slice() {
                [o, p] => (None, o.value(row), p.value(row)),
                [u, o, p] => (Some(u.value(row)), o.value(row), p.value(row)),
                _ => {
                    return datafusion::common::exec_err!("{} takes 2 or 3 arguments", self.name);
                }
            };
            let answer = match &self.bound {
                Some(bound) => bound
                    .answer(self.kind, user, object, privilege)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
                None => true,
            };
            out.append_value(answer);
        }
        let out = out.finish();
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(Arc::new(out))
        })
    }
}

/// A privilege as a function's text names it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wanted {
    Select,
    Insert,
    /// UPDATE, DELETE, TRUNCATE and the like: changing a table (ALL).
    Manage,
    /// USAGE on a schema, CONNECT or TEMPORARY on the database: anyone's.
    Anyone,
    /// CREATE on a schema or the database.
    Admin,
}

impl Bound {
    fn answer(
        &self,
        kind: Kind,
        user: Option<&str>,
        object: &str,
        privilege: &str,
    ) -> Result<bool, SqlError> {
        let who = match user {
            None => self.who.clone(),
            Some(u) if u == self.who.user() => self.who.clone(),
            Some(u) if !self.directory.is_admin(&self.who) => {
                return Err(SqlError::new(
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "permission denied to see the privileges of user \"{u}\": user \"{}\" may only ask about itself",
                        self.who.user()
                    ),
                ));
            }
            Some(u) if !self.directory.user_exists(u) => {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!("role \"{u}\" does not exist"),
                ));
            }
            Some(u) => Principal::password(u),
        };
        let wanted = wanted(kind, privilege)?;
        let allowed = |action: Action<'_>| self.directory.check(&who, action).is_ok();
        let admin = || allowed(Action::Admin(""));
        let holds = |table: Option<&str>, w: Wanted, grant_option: bool| {
            let held = match (w, table) {
                (Wanted::Select, Some(t)) => allowed(Action::Select(t)),
                (Wanted::Insert, Some(t)) => allowed(Action::Insert(t)),
                (Wanted::Manage, Some(t)) => allowed(Action::Manage(t)),
                // A catalog or system table: anyone reads it, nobody writes.
                (Wanted::Select, None) => true,
                (Wanted::Insert | Wanted::Manage, None) => false,
                (Wanted::Anyone, _) => true,
                (Wanted::Admin, _) => admin(),
            };
            // Only admins grant.
            held && (!grant_option || admin())
        };
        let any = |table: Option<&str>| wanted.iter().any(|&(w, g)| holds(table, w, g));
        match kind {
            Kind::Table => match self.table(object) {
                Some(Some(t)) => {
                    if any(Some(&t)) {
                        Ok(true)
                    } else if allowed(Action::Select(&t)) || allowed(Action::Insert(&t)) {
                        Ok(false)
                    } else {
                        // A table the user may not see is not there for it
                        // (as in the catalogs and `'t'::regclass`).
                        Err(no_relation(object))
                    }
                }
                Some(None) => Ok(any(None)),
                None => Err(no_relation(object)),
            },
            Kind::Schema => {
                let schema = normalized(object);
                if self.names.schemas.contains(&schema) {
                    Ok(any(None))
                } else {
                    Err(SqlError::new(
                        SqlState::INVALID_SCHEMA_NAME,
                        format!("schema \"{object}\" does not exist"),
                    ))
                }
            }
            Kind::Database => {
                if normalized(object) == self.names.database {
                    Ok(any(None))
                } else {
                    Err(SqlError::new(
                        SqlState::INVALID_CATALOG_NAME,
                        format!("database \"{object}\" does not exist"),
                    ))
                }
            }
        }
    }

    /// `Some(Some(t))` for Sextant's table `t`, `Some(None)` for a catalog
    /// or system table, `None` for a name that is neither.
    fn table(&self, object: &str) -> Option<Option<String>> {
        let r = TableReference::parse_str(object);
        let database = r.catalog().is_none_or(|c| c == self.names.database);
        let table = r.table().to_string();
        match r.schema() {
            _ if !database => None,
            None | Some("public") if self.names.tables.contains(&table) => Some(Some(table)),
            Some("pg_catalog") | None if PG_CATALOG_TABLES.contains(&table.as_str()) => Some(None),
            Some("information_schema" | "system") => Some(None),
            _ => None,
        }
    }
}

/// The privileges `text` lists (`'SELECT, INSERT WITH GRANT OPTION'`),
/// each with whether it asks for the grant option.
fn wanted(kind: Kind, text: &str) -> Result<Vec<(Wanted, bool)>, SqlError> {
    text.split(',')
        .map(|p| {
            let p = p.trim().to_uppercase();
            let (p, grant_option) = match p.strip_suffix("WITH GRANT OPTION") {
                Some(p) => (p.trim_end().to_string(), true),
                None => (p, false),
            };
            let w = match (kind, p.as_str()) {
                (Kind::Table, "SELECT") => Wanted::Select,
                (Kind::Table, "INSERT") => Wanted::Insert,
                (
                    Kind::Table,
                    "UPDATE" | "DELETE" | "TRUNCATE" | "REFERENCES" | "TRIGGER" | "MAINTAIN",
                ) => Wanted::Manage,
                (Kind::Schema, "USAGE") => Wanted::Anyone,
                (Kind::Database, "CONNECT" | "TEMP" | "TEMPORARY") => Wanted::Anyone,
                (Kind::Schema | Kind::Database, "CREATE") => Wanted::Admin,
                _ => {
                    return Err(SqlError::invalid_parameter(format!(
                        "unrecognized privilege type: \"{}\"",
                        p.to_lowercase()
                    )));
                }
            };
            Ok((w, grant_option))
        })
        .collect()
}

fn no_relation(object: &str) -> SqlError {
    SqlError::new(
        SqlState::UNDEFINED_TABLE,
        format!("relation \"{object}\" does not exist"),
    )
}

/// A schema's or database's name as Postgres reads it: lower case unless
/// quoted.
fn normalized(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    }
}
