//! Memory limits for `serve-sql`: one DataFusion memory pool for the whole server, and
//! in front of it a pool per connection that stops at the per-query limit. A
//! connection runs one statement at a time, so its pool is that query's budget (an open
//! cursor keeps its share until it is closed).
//!
//! What the pools see is what DataFusion's operators reserve: hash tables and build
//! sides of joins, aggregation state, sort buffers, repartition and spill buffers. An
//! operator that can spill (sort, grouped aggregation, repartition, the nested-loop
//! join's buffered side) goes to disk when its reservation is refused; one that cannot
//! (the hash join's build side, an aggregate without `GROUP BY`) fails the query with
//! DataFusion's "Resources exhausted" error, and the server carries on.

use std::fmt::{self, Display};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    human_readable_size,
};

/// The server's pool, and the limit each connection's pool gets.
#[derive(Debug)]
pub(crate) struct ServerMemory {
    server: Arc<dyn MemoryPool>,
    query_limit: usize,
}

impl ServerMemory {
    /// `query_limit` is capped at `server_limit`: one query can never use more than
    /// the whole server.
    pub(crate) fn new(server_limit: usize, query_limit: usize) -> ServerMemory {
        ServerMemory {
            server: Arc::new(GreedyMemoryPool::new(server_limit)),
            query_limit: query_limit.min(server_limit),
        }
    }

    /// A fresh pool for one connection.
    pub(crate) fn query_pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(QueryPool {
            limit: self.query_limit,
            used: AtomicUsize::new(0),
            server: self.server.clone(),
        })
    }

    /// Bytes reserved by all connections together.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.server.reserved()
    }
}

/// One connection's pool: counts its own reservations against its limit, and passes
/// every reservation on to the server's pool, so that all queries together stay
/// within the server's limit too.
#[derive(Debug)]
struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    server: Arc<dyn MemoryPool>,
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "serve-sql query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        // Infallible by contract (memory already in use); counted so that the next
        // `try_grow` sees it.
        self.server.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.server.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional)
                    .filter(|total| *total <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more memory than the {} one query may use \
                     (serve-sql --query-memory-limit): {} more for {} with {} in use",
                    human_readable_size(self.limit),
                    human_readable_size(additional),
                    reservation.consumer().name(),
                    human_readable_size(used),
                ))
            })?;
        if let Err(e) = self.server.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the memory all queries together may use (serve-sql --memory-limit) is taken: {}",
                e.message()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(used: {}, limit: {}, server: {})",
            self.name(),
            human_readable_size(self.used.load(Ordering::Relaxed)),
            human_readable_size(self.limit),
            self.server
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn exhausted(e: &DataFusionError) -> bool {
        matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
    }

    #[test]
    fn issue_19_a_query_stops_at_its_own_limit() {
        let memory = ServerMemory::new(1_000, 100);
        let pool = memory.query_pool();
        let r = MemoryConsumer::new("test").register(&pool);
        r.try_grow(80).expect("within the query limit");
        let e = r.try_grow(30).expect_err("over the query limit");
        assert!(exhausted(&e), "{e}");
        assert!(e.to_string().contains("Resources exhausted"), "{e}");
        assert!(e.to_string().contains("--query-memory-limit"), "{e}");
        // The refused bytes were not taken from the server.
        assert_eq!(memory.reserved(), 80);
        r.try_grow(20).expect("exactly the limit");
        drop(r);
        assert_eq!(memory.reserved(), 0);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn issue_19_queries_together_stop_at_the_server_limit() {
        let memory = ServerMemory::new(150, 100);
        let a = memory.query_pool();
        let b = memory.query_pool();
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(100).expect("a within its limit");
        let e = rb.try_grow(60).expect_err("the server has 50 left");
        assert!(exhausted(&e), "{e}");
        assert!(e.to_string().contains("--memory-limit"), "{e}");
        // Rolled back in the query's own count too.
        assert_eq!(b.reserved(), 0);
        rb.try_grow(50).expect("what the server has left");
        assert_eq!(memory.reserved(), 150);
        drop(ra);
        rb.try_grow(50).expect("a's memory is free again");
    }

    #[test]
    fn issue_19_the_query_limit_is_capped_at_the_server_limit() {
        let memory = ServerMemory::new(100, 1_000);
        let pool = memory.query_pool();
        let r = MemoryConsumer::new("test").register(&pool);
        let e = r.try_grow(101).expect_err("over the server's limit");
        assert!(e.to_string().contains("--query-memory-limit"), "{e}");
        assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(100)));
    }

    /// A hash join's build side cannot spill: over the limit the query fails with
    /// DataFusion's resources error, its memory is returned, and the next query runs.
    #[tokio::test]
    async fn issue_19_a_join_over_the_limit_fails_and_the_next_query_runs() {
        let memory = ServerMemory::new(64 << 20, 4 << 20);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(memory.query_pool())
            .build_arc()
            .expect("runtime");
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let join = |n: u64| {
            format!("SELECT count(*) FROM range({n}) a JOIN range({n}) b ON a.value = b.value")
        };
        let e = ctx
            .sql(&join(4_000_000))
            .await
            .expect("plan")
            .collect()
            .await
            .expect_err("a 4 million row build side is over 4 MiB");
        assert!(exhausted(&e), "{e}");
        // Partitions run in spawned tasks, which are aborted, not dropped, with the
        // stream: give them a moment to hand their memory back.
        for _ in 0..200 {
            if memory.reserved() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            memory.reserved(),
            0,
            "the failed query's memory is returned"
        );
        let batches = ctx
            .sql(&join(1_000))
            .await
            .expect("plan")
            .collect()
            .await
            .expect("a small join fits");
        let count = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0));
        assert_eq!(count, Some(1_000));
    }
}
