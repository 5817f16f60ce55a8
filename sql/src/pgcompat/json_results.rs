//! `->` answers JSON every client reads: datafusion-functions-json's `->`
//! (`json_get`) returns an Arrow union (one child per JSON type), which it
//! rewrites well when a cast or a comparison follows (`(attributes->'n')::int`),
//! but which no client can read as a result (arrow-pg refused it:
//! `Unsupported Datatype Union`). A query whose result has such a column
//! gets a projection that writes each as its JSON text
//! (`json_union_to_text`), laid out as PostgreSQL prints jsonb (`{"a": 1,
//! "bb": [1, 2]}`: keys shortest first, a space after `:` and `,`;
//! [`jsonb_text`]) and typed `jsonb` for clients, as PostgreSQL's `->` on
//! jsonb answers.

use std::sync::Arc;

use arrow_pg::datatypes::PG_TYPE_KEY;
use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::common::metadata::FieldMetadata;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::functions::{answer, rows};

/// Registers `sextant_jsonb`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(Jsonb::default()));
}

/// `plan`, its JSON-union columns written as `jsonb` text.
pub fn json_results(ctx: &SessionContext, plan: LogicalPlan) -> Result<LogicalPlan> {
    let union = |t: &DataType| matches!(t, DataType::Union(..));
    if matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Ddl(_))
        || !plan.schema().fields().iter().any(|f| union(f.data_type()))
    {
        return Ok(plan);
    }
    let to_text = ctx.udf("json_union_to_text")?;
    let jsonb_layout = ctx.udf("sextant_jsonb")?;
    let jsonb = FieldMetadata::from(std::collections::BTreeMap::from([(
        PG_TYPE_KEY.to_string(),
        "jsonb".to_string(),
    )]));
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if union(field.data_type()) {
                let text = to_text.call(vec![column]);
                jsonb_layout.call(vec![text]).alias_qualified_with_metadata(
                    qualifier.cloned(),
                    field.name(),
                    Some(jsonb.clone()),
                )
            } else {
                column
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// `sextant_jsonb(text)`: JSON text laid out as PostgreSQL prints jsonb.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Jsonb {
    signature: Signature,
}

impl Default for Jsonb {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Jsonb {
    fn name(&self) -> &str {
        "sextant_jsonb"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let texts = cast(&args.args[0].to_array(rows(&args.args))?, &DataType::Utf8)?;
        let texts = texts.as_string::<i32>();
        let out: StringArray = (0..texts.len())
            .map(|i| {
                texts.is_valid(i).then(|| {
                    let t = texts.value(i);
                    serde_json::from_str::<serde_json::Value>(t)
                        .map(|v| jsonb_text(&v))
                        .unwrap_or_else(|_| t.to_string())
                })
            })
            .collect();
        answer(&args.args, Arc::new(out))
    }
}

/// `v` as PostgreSQL prints a jsonb value: object keys shortest first
/// (then by their bytes), `": "` and `", "` between the parts.
pub(crate) fn jsonb_text(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_jsonb(v, &mut out);
    out
}

fn write_jsonb(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_jsonb(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::jsonb_text;

    /// PostgreSQL 15: `SELECT '{"bb": [1,2], "a": {"c":"x"}, "ccc": null}'::jsonb`.
    #[test]
    fn laid_out_as_postgresql_prints_jsonb() {
        let v = serde_json::from_str(r#"{"bb": [1,2], "a": {"c":"x"}, "ccc": null}"#).unwrap();
        assert_eq!(
            jsonb_text(&v),
            r#"{"a": {"c": "x"}, "bb": [1, 2], "ccc": null}"#
        );
    }
}
