//! `tandem cluster check`: the configuration cluster judged in the Nagios convention (see
//! [`crate::nagios`]): CRITICAL when there is no captain, or this member cannot apply
//! committed changes or needs a destructive resync; WARNING when a member is down, catching
//! up, cannot apply, or holds changes no captain has committed.
//!
//! Must never: answer OK while a committed change is not applied on the member asked.

use crate::nagios::{Level, Verdict};

use super::status::{ClusterStatus, MemberState};

/// Judges `st` (the answer of one member, `st.reporter`).
pub fn check(st: &ClusterStatus) -> Verdict {
    if st.cluster_id.is_none() {
        return Verdict::new("not in a cluster");
    }
    let up = st.members.iter().filter(|m| m.state == MemberState::Up).count();
    let captain = st.members.iter().find(|m| m.node_id.is_some() && m.node_id == st.captain);
    let mut v = Verdict::new(format!(
        "captain {}, {up} of {} members up",
        captain.map_or("?", |m| m.name.as_str()),
        st.members.len()
    ));
    if st.captain.is_none() {
        v.add(Level::Critical, "no captain: changes cannot commit");
    }
    for m in &st.members {
        let here = m.node_id.is_some() && m.node_id == st.reporter;
        let name = if here { format!("{} (this member)", m.name) } else { m.name.clone() };
        match m.state {
            MemberState::Up | MemberState::Removed | MemberState::Unjoined => {}
            MemberState::CannotApply if here => {
                let why = m.cannot_apply.as_ref().map_or(String::new(), |s| format!(": {}", s.error));
                v.add(Level::Critical, format!("{name} cannot apply committed changes{why}"));
            }
            MemberState::NeedsResync if here => {
                v.add(Level::Critical, format!("{name} needs `tandem cluster resync --destructive`"))
            }
            MemberState::CatchingUp => {
                v.add(Level::Warning, format!("{name} is catching up ({} entries behind)", m.lag))
            }
            MemberState::OutOfSync if m.outbox > 0 => {
                v.add(Level::Warning, format!("{name} holds {} changes no captain has committed", m.outbox))
            }
            MemberState::OutOfSync => v.add(Level::Warning, format!("{name} hears no captain")),
            MemberState::CannotApply => {
                v.add(Level::Warning, format!("{name} cannot apply committed changes"))
            }
            MemberState::NeedsResync => v.add(Level::Warning, format!("{name} needs a destructive resync")),
            MemberState::Down => v.add(Level::Warning, format!("{name} is down")),
        }
    }
    v
}
