//! One node's write buffer read by another: a Flight DoGet on the node's
//! Flight SQL port whose ticket ([`BUFFER_TICKET_TYPE`]) names the table,
//! its id, the position the reader's files cover and the columns; the node
//! answers from `Engine::buffered_since` ([`answer_buffer_ticket`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::Any;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sextant_storage::{BufferRequest, Engine, StorageError};
use tonic::transport::Channel;

use crate::SECRET_HEADER;

/// The `type_url` of a buffer ticket.
pub const BUFFER_TICKET_TYPE: &str = "type.googleapis.com/sextant.BufferScan";

/// The `type_url` of a ticket that asks a node to take in the deletes
/// another node ran ([`Engine::take_in_deletes`]); it answers one row, the
/// rows it removed from its buffer (`rows`, UInt64).
pub const DELETES_TICKET_TYPE: &str = "type.googleapis.com/sextant.TakeDeletes";

/// A deletes ticket: the table the delete was of (for the logs; the node
/// takes in every delete it has not).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeletesProto {
    #[prost(string, tag = "1")]
    pub(crate) table: String,
}

/// A buffer scan as it travels: in a Flight ticket and in an encoded plan.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BufferProto {
    /// The node whose buffer is read (plans only).
    #[prost(string, tag = "1")]
    pub(crate) node: String,
    #[prost(string, tag = "2")]
    pub(crate) table: String,
    #[prost(int64, tag = "3")]
    pub(crate) table_id: i64,
    #[prost(uint64, tag = "4")]
    pub(crate) after: u64,
    /// The wanted columns: a `datafusion.Schema` message.
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) schema: Vec<u8>,
    /// The node's Flight address as the planning node knew it (plans
    /// only), for a worker that has not read the registry since.
    #[prost(string, tag = "6")]
    pub(crate) address: String,
}

impl BufferProto {
    pub(crate) fn new(node: &str, request: &BufferRequest) -> DfResult<Self> {
        let schema = datafusion_proto::protobuf::Schema::try_from(request.schema.as_ref())?;
        Ok(Self {
            node: node.to_string(),
            table: request.table.clone(),
            table_id: request.table_id,
            after: request.after,
            schema: schema.encode_to_vec(),
            address: String::new(),
        })
    }

    pub(crate) fn request(&self) -> DfResult<BufferRequest> {
        let proto = datafusion_proto::protobuf::Schema::decode(self.schema.as_slice())
            .map_err(|e| DataFusionError::Internal(format!("buffer scan schema: {e}")))?;
        let schema: SchemaRef = Arc::new(Schema::try_from(&proto)?);
        Ok(BufferRequest {
            table: self.table.clone(),
            table_id: self.table_id,
            after: self.after,
            schema,
        })
    }
}

/// This node's buffer, read in place.
pub(crate) fn local(
    engine: &Engine,
    request: BufferRequest,
) -> DfResult<SendableRecordBatchStream> {
    let schema = request.schema.clone();
    let batches = engine.buffered_since(&request).map_err(to_df)?;
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    )))
}

fn to_df(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The answer to a ticket from a peer: a buffer ticket's rows (the schema
/// and batches of this node's buffered rows), or a deletes ticket's count;
/// `None` if `ticket` is neither.
pub async fn answer_peer_ticket(
    engine: &Engine,
    ticket: &Any,
) -> Option<Result<(SchemaRef, Vec<RecordBatch>), StorageError>> {
    if ticket.type_url != DELETES_TICKET_TYPE {
        return answer_buffer_ticket(engine, ticket);
    }
    let answer = async {
        let proto = DeletesProto::decode(ticket.value.as_ref())
            .map_err(|e| StorageError::InvalidData(format!("deletes ticket: {e}")))?;
        let rows = engine.take_in_deletes().await?;
        tracing::debug!(table = %proto.table, rows, "deletes taken in on request");
        let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "rows",
            arrow::datatypes::DataType::UInt64,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::UInt64Array::from(vec![rows]))],
        )?;
        Ok((schema as SchemaRef, vec![batch]))
    };
    Some(answer.await)
}

/// Asks `node` at `address` to take in the deletes of `table`, and waits
/// until it has (the rows each node removed are in the catalog).
pub(crate) async fn announce(
    node: String,
    address: String,
    channel: Result<Channel, String>,
    secret: String,
    table: String,
) -> Result<(), String> {
    let failed = |e: String| format!("node {node} ({}): {e}", crate::host_port(&address));
    let channel = channel.map_err(&failed)?;
    let ticket = Any {
        type_url: DELETES_TICKET_TYPE.to_string(),
        value: DeletesProto { table }.encode_to_vec().into(),
    };
    let mut call = tonic::Request::new(Ticket {
        ticket: ticket.encode_to_vec().into(),
    });
    call.set_timeout(std::time::Duration::from_secs(30));
    call.metadata_mut().insert(
        SECRET_HEADER,
        secret
            .parse()
            .map_err(|e| failed(format!("cluster secret: {e}")))?,
    );
    let mut client = FlightServiceClient::new(channel);
    let response = client
        .do_get(call)
        .await
        .map_err(|s| failed(s.message().to_string()))?;
    let _answer: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
        response
            .into_inner()
            .map_err(|s| FlightError::Tonic(Box::new(s))),
    )
    .try_collect()
    .await
    .map_err(|e| failed(e.to_string()))?;
    Ok(())
}

/// The answer to a buffer ticket from a peer: the schema and batches of
/// this node's buffered rows; `None` if `ticket` is not a buffer ticket.
fn answer_buffer_ticket(
    engine: &Engine,
    ticket: &Any,
) -> Option<Result<(SchemaRef, Vec<RecordBatch>), StorageError>> {
    if ticket.type_url != BUFFER_TICKET_TYPE {
        return None;
    }
    let answer = BufferProto::decode(ticket.value.as_ref())
        .map_err(|e| StorageError::InvalidData(format!("buffer ticket: {e}")))
        .and_then(|proto| {
            proto
                .request()
                .map_err(|e| StorageError::InvalidData(format!("buffer ticket: {e}")))
        })
        .and_then(|request| {
            let batches = engine.buffered_since(&request)?;
            Ok((request.schema, batches))
        });
    Some(answer)
}

/// `node`'s buffered rows for `request`, over `channel` to `address`; the
/// stream fails with an error naming the node if it cannot be read.
pub(crate) fn fetch(
    node: String,
    address: String,
    channel: Result<Channel, String>,
    secret: String,
    request: BufferRequest,
) -> SendableRecordBatchStream {
    let schema = request.schema.clone();
    let table = request.table.clone();
    let unreachable = {
        let (node, address, table) = (node.clone(), address.clone(), table.clone());
        move |e: String| {
            DataFusionError::Execution(format!(
                "node {node} ({address}) cannot be reached: its buffered rows of \"{table}\" \
                     are not readable until it is back ({e})"
            ))
        }
    };
    let open = async move {
        let channel = channel.map_err(&unreachable)?;
        let proto = BufferProto::new(&node, &request)?;
        let ticket = Any {
            type_url: BUFFER_TICKET_TYPE.to_string(),
            value: proto.encode_to_vec().into(),
        };
        let mut call = tonic::Request::new(Ticket {
            ticket: ticket.encode_to_vec().into(),
        });
        call.metadata_mut().insert(
            SECRET_HEADER,
            secret
                .parse()
                .map_err(|e| DataFusionError::Configuration(format!("cluster secret: {e}")))?,
        );
        let mut client = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        let response = client.do_get(call).await.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => unreachable(s.to_string()),
            // The node persisted past the query's files: run it again.
            tonic::Code::Aborted => {
                DataFusionError::External(Box::new(StorageError::Stale(s.message().to_string())))
            }
            _ => DataFusionError::Execution(format!(
                "node {node}: reading its buffered rows of \"{table}\" failed: {}",
                s.message()
            )),
        })?;
        let stream = FlightRecordBatchStream::new_from_flight_data(
            response
                .into_inner()
                .map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        let node2 = node.clone();
        Ok::<_, DataFusionError>(stream.map_err(move |e| {
            DataFusionError::Execution(format!("node {node2}: reading its buffer failed: {e}"))
        }))
    };
    let stream = futures::stream::once(open).try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, stream.boxed()))
}
