//! Loading the object with its maps pinned per instance, checking the layout of maps a previous
//! run left behind, and attaching to interfaces.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_common::{LayoutRecord, map_names};

use super::{OBJECT, PinDir, RateEvents, XdpError, programs};

/// How to attach: `Auto` tries native (driver) mode and falls back to generic (skb) mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Auto,
    Driver,
    Skb,
}

/// The loaded filter program and its attachments. Dropping it detaches the program from every
/// interface; the maps stay pinned, so blocks survive a restart.
pub struct Fastpath {
    ebpf: Ebpf,
    pins: PinDir,
    attached: Vec<(String, XdpLinkId)>,
}

impl Fastpath {
    /// Loads the filter for `instance`, reusing the maps a previous run pinned (after checking
    /// their layout) or creating them.
    pub fn load(bpffs: &Path, instance: &str) -> Result<Self, XdpError> {
        let (pins, mut ebpf) = open_object(bpffs, instance)?;
        let program: &mut Xdp = ebpf
            .program_mut(programs::FILTER)
            .ok_or_else(|| XdpError::UnknownMap(programs::FILTER.into()))?
            .try_into()?;
        program.load()?;
        Ok(Self {
            ebpf,
            pins,
            attached: Vec::new(),
        })
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Attaches to `iface`; returns the mode actually used.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&'static str, XdpError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(programs::FILTER)
            .ok_or_else(|| XdpError::UnknownMap(programs::FILTER.into()))?
            .try_into()?;
        let attach = |program: &mut Xdp, m| {
            program.attach(iface, m).map_err(|e| XdpError::Attach {
                iface: iface.to_owned(),
                reason: error_chain(&e),
            })
        };
        let (link, used) = match mode {
            AttachMode::Driver => (attach(program, XdpMode::Driver)?, "driver"),
            AttachMode::Skb => (attach(program, XdpMode::Skb)?, "skb"),
            AttachMode::Auto => match attach(program, XdpMode::Driver) {
                Ok(link) => (link, "driver"),
                Err(e) => {
                    tracing::info!(iface, error = %e, "native XDP unavailable, using generic (skb) mode");
                    (attach(program, XdpMode::Skb)?, "skb")
                }
            },
        };
        self.attached.push((iface.to_owned(), link));
        Ok(used)
    }

    /// Detaches from every interface (also done on drop).
    pub fn detach_all(&mut self) {
        if let Some(program) = self.ebpf.program_mut(programs::FILTER)
            && let Ok(program) = <&mut Xdp>::try_from(program)
        {
            for (iface, link) in self.attached.drain(..) {
                if let Err(e) = program.detach(link) {
                    tracing::warn!(iface, error = %e, "detaching XDP program");
                }
            }
        }
    }

    /// The ring buffer of rate-cap events; can be taken once.
    pub fn take_events(&mut self) -> Result<RateEvents, XdpError> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or_else(|| XdpError::UnknownMap(map_names::EVENTS.into()))?;
        RateEvents::new(map)
    }
}

impl Drop for Fastpath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Makes sure the instance's maps exist (creating and pinning them without loading or attaching
/// any program), so operators can stage blocks before the daemon first runs.
pub fn ensure_pinned(bpffs: &Path, instance: &str) -> Result<PinDir, XdpError> {
    let pins = PinDir::new(bpffs, instance);
    if pins.exists() {
        check_layout(&pins)?;
        return Ok(pins);
    }
    open_object(bpffs, instance).map(|(pins, _)| pins)
}

/// Loads the object's maps under the instance's pin directory, holding the writers' lock.
pub fn open_object(bpffs: &Path, instance: &str) -> Result<(PinDir, Ebpf), XdpError> {
    let pins = PinDir::new(bpffs, instance);
    pins.create(bpffs)?;
    let _lock = pins.lock()?;
    if pins.exists() {
        check_layout(&pins)?;
    } else if std::fs::read_dir(&pins.path).is_ok_and(|mut d| d.next().is_some()) {
        // Maps without a layout record: not ours to reuse.
        return Err(XdpError::LayoutMismatch {
            instance: instance.to_owned(),
            dir: pins.path.clone(),
            found: "unknown (no layout record)".into(),
            expected: describe(&LayoutRecord::current()),
        });
    }
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins.path)
        .load(OBJECT)?;
    let layout = ebpf
        .map_mut(map_names::LAYOUT)
        .ok_or_else(|| XdpError::UnknownMap(map_names::LAYOUT.into()))?;
    let mut layout: Array<&mut MapData, LayoutRecord> =
        Array::try_from(layout).map_err(XdpError::map(map_names::LAYOUT))?;
    layout
        .set(0, LayoutRecord::current(), 0)
        .map_err(XdpError::map(map_names::LAYOUT))?;
    Ok((pins, ebpf))
}

fn check_layout(pins: &PinDir) -> Result<(), XdpError> {
    let data = MapData::from_pin(pins.map_path(map_names::LAYOUT))
        .map_err(XdpError::map(map_names::LAYOUT))?;
    let map = aya::maps::Map::from_map_data(data).map_err(XdpError::map(map_names::LAYOUT))?;
    let layout: Array<MapData, LayoutRecord> =
        Array::try_from(map).map_err(|_| mismatch(pins, "a map of another type".into()))?;
    let found = layout
        .get(&0, 0)
        .map_err(XdpError::map(map_names::LAYOUT))?;
    // A zero record: created by a run that stopped before writing it; ours either way.
    if found == LayoutRecord::current() || found == LayoutRecord::default() {
        Ok(())
    } else {
        Err(mismatch(pins, describe(&found)))
    }
}

fn mismatch(pins: &PinDir, found: String) -> XdpError {
    XdpError::LayoutMismatch {
        instance: pins.instance.clone(),
        dir: pins.path.clone(),
        found,
        expected: describe(&LayoutRecord::current()),
    }
}

fn describe(r: &LayoutRecord) -> String {
    format!("v{} ({:08x})", r.version, r.fingerprint)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(next) = cur {
        s.push_str(": ");
        s.push_str(&next.to_string());
        cur = next.source();
    }
    s
}
