//! Sextant's plan nodes across the network: a [`BufferScanExec`] travels
//! as the node and request it reads; a table scan's root (what EXPLAIN
//! shows of the scan; the files the query holds stay held on the node
//! that planned it) travels as its summary.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use sextant_storage::{
    BufferScanExec, BufferSource, decode_dedup, decode_table_scan, encode_dedup, encode_table_scan,
};

use crate::Cluster;
use crate::buffers::BufferProto;

const BUFFER_SCAN: u8 = 1;
const TABLE_SCAN: u8 = 2;
const DEDUP: u8 = 3;

/// The codec; see the module.
#[derive(Debug)]
pub(crate) struct SextantCodec {
    cluster: Arc<Cluster>,
}

impl SextantCodec {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

impl PhysicalExtensionCodec for SextantCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match buf.split_first() {
            Some((&BUFFER_SCAN, rest)) => {
                let proto = BufferProto::decode(rest)
                    .map_err(|e| DataFusionError::Internal(format!("buffer scan: {e}")))?;
                if !proto.address.is_empty() {
                    self.cluster.learn(&proto.node, &proto.address);
                }
                let source: Arc<dyn BufferSource> = self.cluster.clone();
                Ok(Arc::new(BufferScanExec::new(
                    proto.node.clone(),
                    proto.request()?,
                    source,
                )))
            }
            Some((&TABLE_SCAN, summary)) => {
                let input = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a table scan arrived without its input".into())
                })?;
                decode_table_scan(&String::from_utf8_lossy(summary), input)
            }
            Some((&DEDUP, text)) => {
                let input = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a merge by key arrived without its input".into())
                })?;
                decode_dedup(&String::from_utf8_lossy(text), input)
            }
            _ => Err(DataFusionError::Internal(
                "not a plan node Sextant encoded".into(),
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(scan) = node.downcast_ref::<BufferScanExec>() {
            buf.push(BUFFER_SCAN);
            BufferProto::new(scan.node(), scan.request())?
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("buffer scan: {e}")))?;
            return Ok(());
        }
        if let Some(summary) = encode_table_scan(node.as_ref()) {
            buf.push(TABLE_SCAN);
            buf.extend_from_slice(summary.as_bytes());
            return Ok(());
        }
        if let Some(text) = encode_dedup(node.as_ref()) {
            buf.push(DEDUP);
            buf.extend_from_slice(text.as_bytes());
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "{} cannot run on another node",
            node.name()
        )))
    }
}
