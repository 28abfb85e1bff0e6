//! Hygiene: no test leaves a container, tag or image behind.
//!
//! The driver names every container `<task>-<alloc_id>` and labels it
//! `com.hashicorp.nomad.alloc_id=<alloc id>`, so containers are found by the
//! allocs a test made. [`crate::task::Alloc`] removes its own containers when
//! its last clone is dropped; [`Cleanup`] is the explicit guard for
//! everything else a test registers with it.

use std::sync::{Mutex, PoisonError};

use crate::docker;
use crate::ids::{random_hex, run_id};
use crate::images::TEST_REPOSITORY;

/// The label the driver puts on every container it creates.
pub const ALLOC_ID_LABEL: &str = "com.hashicorp.nomad.alloc_id";

/// Force-removes every container labelled with `alloc_id`.
pub fn remove_alloc_containers(alloc_id: &str) -> anyhow::Result<()> {
    let ids = docker::containers_with_label(ALLOC_ID_LABEL, alloc_id)?;
    docker::remove_containers(&ids)
}

/// Force-removes every container whose name contains `run_id` (task names
/// embed it): what a crashed run of this harness left behind.
pub fn sweep_run(run_id: &str) -> anyhow::Result<()> {
    let names = docker::containers_named(run_id)?;
    docker::remove_containers(&names)
}

/// On drop (or [`Cleanup::run`]), removes the containers of the registered
/// allocs, the registered containers, then the registered image references.
#[derive(Debug, Default)]
pub struct Cleanup {
    allocs: Mutex<Vec<String>>,
    containers: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
}

impl Cleanup {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes the containers labelled with `alloc_id` at cleanup.
    pub fn alloc(&self, alloc_id: &str) {
        push(&self.allocs, alloc_id);
    }

    /// Removes container `name_or_id` at cleanup.
    pub fn container(&self, name_or_id: &str) {
        push(&self.containers, name_or_id);
    }

    /// Removes image reference `reference` at cleanup (only the tag when
    /// other tags share the image).
    pub fn image(&self, reference: &str) {
        push(&self.images, reference);
    }

    /// Tags `source` as `wasmdock-test/busybox:<run id>-<random>` and
    /// registers the new tag for removal. Returns the new reference.
    pub fn unique_tag(&self, source: &str) -> anyhow::Result<String> {
        let target = format!("{TEST_REPOSITORY}:{}-{}", run_id(), random_hex(8));
        docker::docker(&["tag", source, &target])?;
        self.image(&target);
        Ok(target)
    }

    /// Removes everything registered so far; the first error is returned,
    /// but every removal is tried. Safe to call more than once.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut first_error = None;
        let mut note = |result: anyhow::Result<()>| {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        };
        for alloc_id in take(&self.allocs) {
            note(remove_alloc_containers(&alloc_id));
        }
        note(docker::remove_containers(&take(&self.containers)));
        for reference in take(&self.images) {
            note(docker::remove_image(&reference));
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(err) = self.run() {
            eprintln!("wasmdock-e2e cleanup: {err:#}");
        }
    }
}

fn push(list: &Mutex<Vec<String>>, item: &str) {
    list.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(item.to_owned());
}

fn take(list: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *list.lock().unwrap_or_else(PoisonError::into_inner))
}
