//! Retention: the store never grows past its limits of age, count and
//! size. The daemon enforces them after every write and once a minute, so
//! a limit lowered by a reload or a clock that moved on takes effect
//! without new crashes.
//!
//! Size is the space the database's live pages use; deleted rows go to
//! the free list and are returned to the file system by incremental
//! vacuuming, a little at a time, so enforcement never stalls the daemon
//! for a full `VACUUM`.

use rusqlite::params;

use super::{Store, StoreError, full_or, timefmt::now_us};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionLimits {
    pub max_age_days: u32,
    pub max_count: u64,
    pub max_size_bytes: u64,
}

/// Oldest crashes deleted per step while the store is over its size.
const SIZE_STEP: i64 = 200;
/// Free pages handed back to the file system per enforcement.
const VACUUM_PAGES: i64 = 2048;

impl Store {
    /// Deletes what is past the limits; returns how many crashes went.
    pub fn enforce_retention(&mut self, limits: &RetentionLimits) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        if limits.max_age_days > 0 {
            let cutoff = now_us() - i64::from(limits.max_age_days) * 86_400 * 1_000_000;
            deleted += self
                .conn
                .execute("DELETE FROM crashes WHERE time_us < ?1", params![cutoff])
                .map_err(full_or)? as u64;
            self.conn
                .execute("DELETE FROM suppressed WHERE last_us < ?1", params![cutoff])
                .map_err(full_or)?;
            self.conn
                .execute("DELETE FROM leaks WHERE time_us < ?1", params![cutoff])
                .map_err(full_or)?;
        }
        if limits.max_count > 0 {
            let count: i64 = self
                .conn
                .query_row("SELECT count(*) FROM crashes", [], |r| r.get(0))?;
            let excess = count - limits.max_count as i64;
            if excess > 0 {
                deleted += self.delete_oldest(excess)?;
            }
        }
        if limits.max_size_bytes > 0 {
            while self.used_bytes()? > limits.max_size_bytes {
                let n = self.delete_oldest(SIZE_STEP)?;
                if n == 0 {
                    break;
                }
                deleted += n;
            }
        }
        if deleted > 0 {
            self.conn
                .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
                .map_err(full_or)?;
        }
        Ok(deleted)
    }

    fn delete_oldest(&mut self, n: i64) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .execute(
                "DELETE FROM crashes WHERE id IN
                    (SELECT id FROM crashes ORDER BY time_us, id LIMIT ?1)",
                params![n],
            )
            .map_err(full_or)? as u64)
    }

    /// Bytes held by live pages (the file minus its free list).
    pub(super) fn used_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        };
        let pages = pragma("page_count")? - pragma("freelist_count")?;
        Ok((pages.max(0) * pragma("page_size")?) as u64)
    }
}
