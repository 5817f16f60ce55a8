//! SQL's time of day from the server's one clock.
//!
//! DataFusion answers `now()` (and `current_timestamp`, `current_date`,
//! `current_time`) with the time its session started the statement, read
//! from the system. On a manual clock (`--manual-clock`, for tests) they
//! answer the clock's time instead, so a query's `now()` agrees with the
//! retention, token expiry and alert times the clock drives. On the system
//! clock nothing changes. Each function wraps DataFusion's own and only
//! changes the start time its simplification sees.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;
use sextant_clock::Clock;

/// Replaces the session's time-of-day functions with ones that read
/// `clock` when it is manual.
pub(crate) fn register_time_functions(ctx: &SessionContext, clock: &Clock) {
    if !clock.is_manual() {
        return;
    }
    for name in ["now", "current_date", "current_time"] {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(ClockTime {
                inner,
                clock: clock.clone(),
            }));
        }
    }
}

/// One of DataFusion's time-of-day functions, simplified at the clock's
/// time.
#[derive(Debug)]
struct ClockTime {
    inner: Arc<ScalarUDF>,
    clock: Clock,
}

impl PartialEq for ClockTime {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for ClockTime {}

impl std::hash::Hash for ClockTime {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for ClockTime {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(ClockTime {
            inner: Arc::new(inner),
            clock: self.clock.clone(),
        }))
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn return_type(
        &self,
        arg_types: &[datafusion::arrow::datatypes::DataType],
    ) -> Result<datafusion::arrow::datatypes::DataType> {
        self.inner.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let at = chrono::DateTime::from_timestamp_nanos(self.clock.now_ns());
        let info = SimplifyContext::builder()
            .with_schema(Arc::clone(info.schema()))
            .with_config_options(Arc::clone(info.config_options()))
            .with_query_execution_start_time(Some(at))
            .build();
        self.inner.simplify(args, &info)
    }
}
