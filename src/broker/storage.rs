//! The embedded broker's storage: Tansu's engine with two of its defects
//! fixed where they show, in the calls between the broker and its storage.
//! Everything else passes straight through.
//!
//! - A fetch from inside a record batch skipped the rest of it
//!   ([`super::resume`]).
//! - Group states Kafka's coordinator never reaches: a leader that is no
//!   longer a member, and a stable group with a member it assigned nothing
//!   to ([`super::groups`]). Both left the scorer without its partitions
//!   for good after a broker stall.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tansu_sans_io::{
    ConfigResource, ErrorCode, IsolationLevel, ListOffset, ScramMechanism,
    create_topics_request::CreatableTopic, delete_groups_response::DeletableGroupResult,
    delete_records_request::DeleteRecordsTopic, delete_records_response::DeleteRecordsTopicResult,
    describe_cluster_response::DescribeClusterBroker,
    describe_configs_response::DescribeConfigsResult,
    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic,
    incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
    list_groups_response::ListedGroup, record::deflated,
    txn_offset_commit_response::TxnOffsetCommitResponseTopic,
};
use tansu_storage::{
    BrokerRegistrationRequest, GroupDetail, ListOffsetResponse, MetadataResponse, NamedGroupDetail,
    OffsetCommitRequest, OffsetStage, ProducerIdResponse, Result, ScramCredential, Storage,
    TopicId, Topition, TxnAddPartitionsRequest, TxnAddPartitionsResponse, TxnOffsetCommitRequest,
    UpdateError, Version,
};
use url::Url;

use super::{groups, resume::trim_front};

/// Where each stored batch of a partition starts (key) and ends (value,
/// inclusive): about 40 bytes per produced batch.
type Extents = BTreeMap<i64, i64>;

#[derive(Clone, Debug)]
pub struct DevStorage<S> {
    inner: S,
    batches: Arc<Mutex<HashMap<Topition, Extents>>>,
}

impl<S> DevStorage<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            batches: Arc::default(),
        }
    }

    fn remember(&self, topition: &Topition, base: i64, last_offset_delta: i32) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .entry(topition.clone())
            .or_default()
            .insert(base, base + i64::from(last_offset_delta));
    }

    fn forget(&self, topic: &str) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches.retain(|topition, _| topition.topic() != topic);
    }

    /// The base offset of the batch that holds `offset`, if one does and
    /// starts before it. Unknown (e.g. written before a restart of a
    /// persistent store) falls back to the engine's own behaviour.
    fn containing_batch(&self, topition: &Topition, offset: i64) -> Option<i64> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let (&base, &last) = batches.get(topition)?.range(..offset).next_back()?;
        (last >= offset).then_some(base)
    }
}

#[async_trait]
impl<S: Storage> Storage for DevStorage<S> {
    async fn produce(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: deflated::Batch,
    ) -> Result<i64> {
        let last_offset_delta = batch.last_offset_delta;
        let base = self.inner.produce(transaction_id, topition, batch).await?;
        self.remember(topition, base, last_offset_delta);
        Ok(base)
    }

    async fn fetch(
        &self,
        topition: &'_ Topition,
        offset: i64,
        min_bytes: u32,
        max_bytes: u32,
        isolation: IsolationLevel,
    ) -> Result<Vec<deflated::Batch>> {
        let Some(base) = self.containing_batch(topition, offset) else {
            return self
                .inner
                .fetch(topition, offset, min_bytes, max_bytes, isolation)
                .await;
        };
        let mut batches = self
            .inner
            .fetch(topition, base, min_bytes, max_bytes, isolation)
            .await?;
        if let Some(first) = batches.first()
            && first.base_offset < offset
        {
            match trim_front(first, offset)? {
                Some(trimmed) => batches[0] = trimmed,
                None => {
                    batches.remove(0);
                }
            }
        }
        Ok(batches)
    }

    async fn delete_topic(&self, topic: &TopicId) -> Result<ErrorCode> {
        let code = self.inner.delete_topic(topic).await?;
        match topic {
            TopicId::Name(name) => self.forget(name),
            // Deleted by id: the name is unknown here, so drop every extent;
            // fetches then behave as the engine's own until new produces.
            TopicId::Id(_) => self
                .batches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear(),
        }
        Ok(code)
    }

    async fn register_broker(&self, broker_registration: BrokerRegistrationRequest) -> Result<()> {
        self.inner.register_broker(broker_registration).await
    }

    async fn create_topic(&self, topic: CreatableTopic, validate_only: bool) -> Result<uuid::Uuid> {
        self.inner.create_topic(topic, validate_only).await
    }

    async fn incremental_alter_resource(
        &self,
        resource: AlterConfigsResource,
    ) -> Result<AlterConfigsResourceResponse> {
        self.inner.incremental_alter_resource(resource).await
    }

    async fn delete_records(
        &self,
        topics: &[DeleteRecordsTopic],
    ) -> Result<Vec<DeleteRecordsTopicResult>> {
        self.inner.delete_records(topics).await
    }

    async fn brokers(&self) -> Result<Vec<DescribeClusterBroker>> {
        self.inner.brokers().await
    }

    async fn offset_stage(&self, topition: &Topition) -> Result<OffsetStage> {
        self.inner.offset_stage(topition).await
    }

    async fn list_offsets(
        &self,
        isolation_level: IsolationLevel,
        offsets: &[(Topition, ListOffset)],
    ) -> Result<Vec<(Topition, ListOffsetResponse)>> {
        self.inner.list_offsets(isolation_level, offsets).await
    }

    async fn offset_commit(
        &self,
        group_id: &str,
        retention_time_ms: Option<Duration>,
        offsets: &[(Topition, OffsetCommitRequest)],
    ) -> Result<Vec<(Topition, ErrorCode)>> {
        self.inner
            .offset_commit(group_id, retention_time_ms, offsets)
            .await
    }

    async fn offset_fetch(
        &self,
        group_id: Option<&str>,
        topics: &[Topition],
        require_stable: Option<bool>,
    ) -> Result<BTreeMap<Topition, i64>> {
        self.inner
            .offset_fetch(group_id, topics, require_stable)
            .await
    }

    async fn committed_offset_topitions(&self, group_id: &str) -> Result<BTreeMap<Topition, i64>> {
        self.inner.committed_offset_topitions(group_id).await
    }

    async fn metadata(&self, topics: Option<&[TopicId]>) -> Result<MetadataResponse> {
        self.inner.metadata(topics).await
    }

    async fn upsert_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        self.inner
            .upsert_user_scram_credential(user, mechanism, credential)
            .await
    }

    async fn delete_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<()> {
        self.inner
            .delete_user_scram_credential(user, mechanism)
            .await
    }

    async fn user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>> {
        self.inner.user_scram_credential(user, mechanism).await
    }

    async fn describe_config(
        &self,
        name: &str,
        resource: ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<DescribeConfigsResult> {
        self.inner.describe_config(name, resource, keys).await
    }

    async fn list_groups(&self, states_filter: Option<&[String]>) -> Result<Vec<ListedGroup>> {
        self.inner.list_groups(states_filter).await
    }

    async fn delete_groups(
        &self,
        group_ids: Option<&[String]>,
    ) -> Result<Vec<DeletableGroupResult>> {
        self.inner.delete_groups(group_ids).await
    }

    async fn describe_groups(
        &self,
        group_ids: Option<&[String]>,
        include_authorized_operations: bool,
    ) -> Result<Vec<NamedGroupDetail>> {
        self.inner
            .describe_groups(group_ids, include_authorized_operations)
            .await
    }

    async fn describe_topic_partitions(
        &self,
        topics: Option<&[TopicId]>,
        partition_limit: i32,
        cursor: Option<Topition>,
    ) -> Result<Vec<DescribeTopicPartitionsResponseTopic>> {
        self.inner
            .describe_topic_partitions(topics, partition_limit, cursor)
            .await
    }

    async fn update_group(
        &self,
        group_id: &str,
        detail: GroupDetail,
        version: Option<Version>,
    ) -> Result<Version, UpdateError<GroupDetail>> {
        let Some(fixed) = groups::fixed(&detail) else {
            return self.inner.update_group(group_id, detail, version).await;
        };
        tracing::debug!(
            group_id,
            "the group broke an invariant of Kafka's coordinator; stored fixed"
        );
        // The coordinator keeps its own copy of the state it writes, under
        // the version returned here. Storing the fixed state twice makes
        // that version stale: the coordinator's next write for the group is
        // refused as outdated, and it reloads the fixed state and applies
        // that request to it.
        let first = self
            .inner
            .update_group(group_id, fixed.clone(), version)
            .await?;
        self.inner
            .update_group(group_id, fixed, Some(first.clone()))
            .await?;
        Ok(first)
    }

    async fn init_producer(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        self.inner
            .init_producer(
                transaction_id,
                transaction_timeout_ms,
                producer_id,
                producer_epoch,
            )
            .await
    }

    async fn txn_add_offsets(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<ErrorCode> {
        self.inner
            .txn_add_offsets(transaction_id, producer_id, producer_epoch, group_id)
            .await
    }

    async fn txn_add_partitions(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        self.inner.txn_add_partitions(partitions).await
    }

    async fn txn_offset_commit(
        &self,
        offsets: TxnOffsetCommitRequest,
    ) -> Result<Vec<TxnOffsetCommitResponseTopic>> {
        self.inner.txn_offset_commit(offsets).await
    }

    async fn txn_end(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Result<ErrorCode> {
        self.inner
            .txn_end(transaction_id, producer_id, producer_epoch, committed)
            .await
    }

    async fn maintain(&self, now: SystemTime) -> Result<()> {
        self.inner.maintain(now).await
    }

    async fn cluster_id(&self) -> Result<String> {
        self.inner.cluster_id().await
    }

    async fn node(&self) -> Result<i32> {
        self.inner.node().await
    }

    async fn advertised_listener(&self) -> Result<Url> {
        self.inner.advertised_listener().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
