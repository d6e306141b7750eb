//! `arista.tag.v2.TagAssignmentService/Subscribe`: the device and
//! interface tags of the mainline workspace (`workspace_id` ""), those the
//! config keeps (`enrich.tags`, `enrich.tag_creators`), live in the store
//! (`directory.rs`). The loop is `resource.rs`.

use super::config::{CreatorName, EnrichConfig};
use super::directory::{creator, Assignment, Directory};
use super::resource::Resource;
use crate::enrichment::{Creator, Tag};
use cvp_proto::tag::{
    ElementSubType, ElementType, TagAssignment, TagAssignmentKey, TagAssignmentStreamRequest,
    TagAssignmentStreamResponse,
};
use cvp_proto::Operation;

pub(super) struct Tags {
    cfg: EnrichConfig,
    staged: Vec<Assignment>,
    over: usize,
    /// No subscription has started yet: the first initial sync goes into
    /// the empty store as it arrives, instead of being staged beside it
    /// (100,000 interface tags staged cost 17 MiB more at start-up).
    first: bool,
    /// This sync goes into the store directly; `n` of it so far.
    direct: Option<usize>,
}

impl Tags {
    pub fn new(cfg: &EnrichConfig) -> Tags {
        Tags {
            cfg: cfg.clone(),
            staged: Vec::new(),
            over: 0,
            first: true,
            direct: None,
        }
    }

    /// The assignment, if it is one the config keeps: of the mainline, on
    /// a switch (not a VM or a vSphere switch), a label asked for.
    /// `removed`: a deletion carries only the key, so its creator is not
    /// known and not asked about.
    fn read(&self, a: TagAssignment, removed: bool) -> Option<Assignment> {
        let made_by = creator(a.tag_creator_type);
        let key = a.key?;
        if key.workspace_id.as_deref().is_some_and(|w| !w.is_empty()) {
            return None;
        }
        if !matches!(
            ElementSubType::try_from(key.element_sub_type),
            Ok(ElementSubType::Unspecified | ElementSubType::Device)
        ) {
            return None;
        }
        let label = key.label.filter(|l| !l.is_empty())?;
        let device_id = key.device_id.filter(|d| !d.is_empty())?;
        let interface_id = match ElementType::try_from(key.element_type) {
            Ok(ElementType::Device) => None,
            Ok(ElementType::Interface) => Some(key.interface_id.filter(|i| !i.is_empty())?),
            _ => return None,
        };
        let wanted = match made_by {
            _ if removed => {
                self.cfg.keeps_tag(&label, CreatorName::User)
                    || self.cfg.keeps_tag(&label, CreatorName::System)
                    || self.cfg.keeps_tag(&label, CreatorName::External)
            }
            // CVP did not say who: kept, as a label asked for.
            Creator::Unspecified => self.cfg.tags.iter().any(|t| t == "*" || *t == label),
            Creator::User => self.cfg.keeps_tag(&label, CreatorName::User),
            Creator::System => self.cfg.keeps_tag(&label, CreatorName::System),
            Creator::External => self.cfg.keeps_tag(&label, CreatorName::External),
        };
        wanted.then(|| Assignment {
            device_id,
            interface_id,
            tag: Tag {
                label,
                value: key.value.unwrap_or_default(),
                creator: made_by,
            },
        })
    }
}

impl Resource for Tags {
    const NAME: &'static str = "tags";
    const SERVICE: &'static str = "arista.tag.v2.TagAssignmentService";
    const PATH: &'static str = "/arista.tag.v2.TagAssignmentService/Subscribe";
    type Request = TagAssignmentStreamRequest;
    type Response = TagAssignmentStreamResponse;

    /// The mainline only, filtered by CVP itself.
    fn request(&self) -> TagAssignmentStreamRequest {
        TagAssignmentStreamRequest {
            partial_eq_filter: vec![TagAssignment {
                key: Some(TagAssignmentKey {
                    workspace_id: Some(String::new()),
                    ..Default::default()
                }),
                tag_creator_type: 0,
            }],
            time: None,
        }
    }

    fn operation(resp: &TagAssignmentStreamResponse) -> i32 {
        resp.r#type
    }

    fn begin(&mut self) {
        // Only the very first: a later one may have to remove what the
        // store holds, so it is staged and replaces it whole.
        self.direct = std::mem::take(&mut self.first).then_some(0);
        self.staged.clear();
        self.over = 0;
    }

    fn stage(&mut self, resp: TagAssignmentStreamResponse, dir: &Directory) {
        let Some(a) = resp.value.and_then(|v| self.read(v, false)) else {
            return;
        };
        if let Some(n) = &mut self.direct {
            if dir.assign_initial(a) {
                *n += 1;
            }
            return;
        }
        if self.staged.len() >= self.cfg.max_tag_assignments {
            self.over += 1;
            return;
        }
        self.staged.push(a);
    }

    fn synced(&mut self, dir: &Directory) -> usize {
        if let Some(n) = self.direct.take() {
            dir.publish();
            return n;
        }
        let staged = std::mem::take(&mut self.staged);
        let n = staged.len();
        dir.replace_tags(staged, std::mem::take(&mut self.over));
        n
    }

    fn apply(&mut self, resp: TagAssignmentStreamResponse, dir: &Directory) {
        let removed = resp.r#type == Operation::Deleted as i32;
        let Some(a) = resp.value.and_then(|v| self.read(v, removed)) else {
            return;
        };
        if removed {
            dir.unassign(&a);
        } else {
            dir.assign(a);
        }
    }
}
