//! The audio I/O seam: [`AudioSource`] and [`AudioSink`], and their cpal implementations.
//!
//! cpal runs its callbacks on its own thread; [`CpalSource`] / [`CpalSink`] bridge them to the
//! blocking, frame-at-a-time traits through a small shared queue. The device's own clock paces
//! them, exactly like [`Paced`](crate::pacer::Paced) paces synthetic ones.
//!
//! Devices disappear (USB headsets get unplugged). The stream's error callback marks the device
//! lost; the next `read`/`write` says so clearly in the log and reopens the system default. If
//! that fails too, the call returns [`MediaError::DeviceUnavailable`]: an error, never a panic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::synth::resample_linear;
use crate::{MediaError, SAMPLE_RATE};

/// Where audio comes from: a microphone, a WAV file, a tone. 48 kHz mono.
pub trait AudioSource: Send {
    /// Fills `frame` with the next samples. A paced source blocks until they exist in real time.
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError>;
    /// A human-readable name for logs.
    fn name(&self) -> String;
}

/// Where audio goes: speakers, a WAV file, nowhere. 48 kHz mono.
pub trait AudioSink: Send {
    /// Consumes one frame. A paced sink blocks until the device is ready for it.
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError>;
    /// Flushes and closes (e.g. fixes a WAV header). Further writes fail.
    fn finish(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
    /// When the next frame will be consumed, if the sink knows: a player can then produce it
    /// just in time instead of a frame early (that frame of slack is pure latency).
    fn due(&self) -> Option<std::time::Instant> {
        None
    }
    fn name(&self) -> String;
}

impl<T: AudioSource + ?Sized> AudioSource for Box<T> {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        (**self).read(frame)
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<T: AudioSink + ?Sized> AudioSink for Box<T> {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        (**self).write(frame)
    }
    fn finish(&mut self) -> Result<(), MediaError> {
        (**self).finish()
    }
    fn due(&self) -> Option<std::time::Instant> {
        (**self).due()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

/// One audio device as the system reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable id (pass it back to open the device).
    pub id: String,
    pub name: String,
    pub input: bool,
    pub output: bool,
    pub default_input: bool,
    pub default_output: bool,
}

/// Lists the host's audio devices. An empty list is not an error: machines without sound cards
/// exist (CI, servers), and the synthetic sources cover them.
pub fn list_devices() -> Result<Vec<DeviceInfo>, MediaError> {
    let host = cpal::default_host();
    let def_in = host.default_input_device().and_then(|d| d.id().ok());
    let def_out = host.default_output_device().and_then(|d| d.id().ok());
    let devices = host
        .devices()
        .map_err(|e| MediaError::Device(format!("cannot list audio devices: {e}")))?;
    let mut out = Vec::new();
    for d in devices {
        let Ok(id) = d.id() else { continue };
        let name = d
            .description()
            .map(|x| x.name().to_string())
            .unwrap_or_else(|_| id.to_string());
        out.push(DeviceInfo {
            id: id.to_string(),
            name,
            input: d.supports_input(),
            output: d.supports_output(),
            default_input: def_in.as_ref() == Some(&id),
            default_output: def_out.as_ref() == Some(&id),
        });
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

fn find_device(dir: Direction, wanted: Option<&str>) -> Result<cpal::Device, MediaError> {
    let host = cpal::default_host();
    let Some(wanted) = wanted else {
        let d = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return d.ok_or_else(|| MediaError::NoDevice {
            direction: dir.label(),
            detail: " (no default device; use a WAV file or tone source instead)".into(),
        });
    };
    let devices = host
        .devices()
        .map_err(|e| MediaError::Device(format!("cannot list audio devices: {e}")))?;
    let mut seen = Vec::new();
    for d in devices {
        let id = d.id().map(|i| i.to_string()).unwrap_or_default();
        let name = d
            .description()
            .map(|x| x.name().to_string())
            .unwrap_or_default();
        if id == wanted || name == wanted {
            return Ok(d);
        }
        seen.push(id);
    }
    Err(MediaError::NoDevice {
        direction: dir.label(),
        detail: format!(" named '{wanted}'; available: [{}]", seen.join(", ")),
    })
}

/// Samples moving between a cpal callback and a blocking reader/writer.
#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<f32>>,
    ready: Condvar,
    lost: AtomicBool,
    lost_reason: Mutex<String>,
}

impl Shared {
    fn mark_lost(&self, e: &cpal::Error) {
        use cpal::ErrorKind::*;
        // Xruns and realtime-priority refusals are glitches, not a lost device.
        if matches!(e.kind(), Xrun | RealtimeDenied) {
            return;
        }
        if let Ok(mut r) = self.lost_reason.lock() {
            *r = e.to_string();
        }
        self.lost.store(true, Ordering::SeqCst);
        self.ready.notify_all();
    }
}

/// An open cpal stream plus what is needed to convert its format to ours.
struct OpenStream {
    _stream: cpal::Stream,
    device_rate: u32,
    name: String,
}

/// At most this much audio is queued between the callback and us; older audio is dropped so
/// latency cannot grow without bound when a reader stalls.
const MAX_QUEUE: usize = SAMPLE_RATE as usize / 5;

fn open_stream(
    dir: Direction,
    wanted: Option<&str>,
    shared: &Arc<Shared>,
) -> Result<OpenStream, MediaError> {
    let device = find_device(dir, wanted)?;
    let name = device
        .description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| wanted.unwrap_or("default").to_string());
    let unavailable = |reason: String| MediaError::DeviceUnavailable {
        name: name.clone(),
        reason,
    };
    let default = match dir {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map_err(|e| unavailable(e.to_string()))?;
    let channels = default.channels().max(1);
    let format = default.sample_format();
    // Prefer 48 kHz (no resampling); fall back to the device's own rate.
    let mut last_err = String::new();
    for rate in [SAMPLE_RATE, default.sample_rate()] {
        let config = cpal::StreamConfig {
            channels,
            sample_rate: rate,
            buffer_size: cpal::BufferSize::Default,
        };
        let built = match format {
            SampleFormat::F32 => build::<f32>(dir, &device, config, rate, shared),
            SampleFormat::I16 => build::<i16>(dir, &device, config, rate, shared),
            SampleFormat::I32 => build::<i32>(dir, &device, config, rate, shared),
            SampleFormat::U16 => build::<u16>(dir, &device, config, rate, shared),
            SampleFormat::U8 => build::<u8>(dir, &device, config, rate, shared),
            other => return Err(unavailable(format!("unsupported sample format {other}"))),
        };
        match built {
            Ok(stream) => {
                stream.play().map_err(|e| unavailable(e.to_string()))?;
                return Ok(OpenStream {
                    _stream: stream,
                    device_rate: rate,
                    name,
                });
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(unavailable(last_err))
}

fn build<T>(
    dir: Direction,
    device: &cpal::Device,
    config: cpal::StreamConfig,
    rate: u32,
    shared: &Arc<Shared>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static + FromSample<f32>,
    f32: FromSample<T>,
{
    let ch = config.channels as usize;
    let err_shared = shared.clone();
    let on_error = move |e: cpal::Error| err_shared.mark_lost(&e);
    let shared = shared.clone();
    match dir {
        Direction::Input => device.build_input_stream(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let Ok(mut q) = shared.queue.lock() else {
                    return;
                };
                for f in data.chunks(ch) {
                    let s: f32 = f.iter().map(|&x| f32::from_sample(x)).sum::<f32>() / ch as f32;
                    q.push_back(s);
                }
                let over = q
                    .len()
                    .saturating_sub(MAX_QUEUE * 48_000 / rate as usize + 1);
                q.drain(..over);
                shared.ready.notify_all();
            },
            on_error,
            Some(Duration::from_secs(2)),
        ),
        Direction::Output => device.build_output_stream(
            config,
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                let Ok(mut q) = shared.queue.lock() else {
                    return;
                };
                for f in data.chunks_mut(ch) {
                    let s = q.pop_front().unwrap_or(0.0);
                    for x in f.iter_mut() {
                        *x = T::from_sample(s);
                    }
                }
                shared.ready.notify_all();
            },
            on_error,
            Some(Duration::from_secs(2)),
        ),
    }
}

/// A device stream that reopens the default device when its own disappears.
struct Endpoint {
    dir: Direction,
    wanted: Option<String>,
    shared: Arc<Shared>,
    stream: OpenStream,
}

impl Endpoint {
    fn open(dir: Direction, wanted: Option<&str>) -> Result<Self, MediaError> {
        let shared = Arc::new(Shared::default());
        let stream = open_stream(dir, wanted, &shared)?;
        Ok(Self {
            dir,
            wanted: wanted.map(str::to_string),
            shared,
            stream,
        })
    }

    /// If the device was lost, says so and falls back to the default device.
    fn recover(&mut self) -> Result<(), MediaError> {
        if !self.shared.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = self
            .shared
            .lost_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        tracing::warn!(
            device = %self.stream.name,
            %reason,
            "audio {} device lost; switching to the default device",
            self.dir.label()
        );
        let shared = Arc::new(Shared::default());
        let stream =
            open_stream(self.dir, None, &shared).map_err(|e| MediaError::DeviceUnavailable {
                name: self.stream.name.clone(),
                reason: format!("{reason}; the default device failed too: {e}"),
            })?;
        tracing::info!(device = %stream.name, "audio {} now on the default device", self.dir.label());
        self.shared = shared;
        self.stream = stream;
        self.wanted = None;
        Ok(())
    }
}

/// A capture device.
pub struct CpalSource {
    ep: Endpoint,
}

impl std::fmt::Debug for CpalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSource")
            .field("name", &self.ep.stream.name)
            .finish()
    }
}

impl CpalSource {
    /// Opens `device` (an id or name from [`list_devices`]) or the default input.
    pub fn open(device: Option<&str>) -> Result<Self, MediaError> {
        Ok(Self {
            ep: Endpoint::open(Direction::Input, device)?,
        })
    }
}

impl AudioSource for CpalSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        self.ep.recover()?;
        let rate = self.ep.stream.device_rate;
        let need = (frame.len() as u64 * rate as u64 / SAMPLE_RATE as u64) as usize;
        let shared = self.ep.shared.clone();
        let mut q = shared
            .queue
            .lock()
            .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
        while q.len() < need {
            if shared.lost.load(Ordering::SeqCst) {
                drop(q);
                self.ep.recover()?;
                return self.read(frame);
            }
            let (guard, timeout) = shared
                .ready
                .wait_timeout(q, Duration::from_secs(2))
                .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
            q = guard;
            if timeout.timed_out() && q.len() < need {
                return Err(MediaError::DeviceUnavailable {
                    name: self.ep.stream.name.clone(),
                    reason: "no audio for 2 s".into(),
                });
            }
        }
        let got: Vec<f32> = q.drain(..need).collect();
        drop(q);
        if rate == SAMPLE_RATE {
            frame.copy_from_slice(&got);
        } else {
            let r = resample_linear(&got, rate, SAMPLE_RATE);
            for (i, x) in frame.iter_mut().enumerate() {
                *x = r.get(i).copied().unwrap_or(0.0);
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.ep.stream.name.clone()
    }
}

/// A playback device.
pub struct CpalSink {
    ep: Endpoint,
}

impl std::fmt::Debug for CpalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSink")
            .field("name", &self.ep.stream.name)
            .finish()
    }
}

impl CpalSink {
    pub fn open(device: Option<&str>) -> Result<Self, MediaError> {
        Ok(Self {
            ep: Endpoint::open(Direction::Output, device)?,
        })
    }
}

impl AudioSink for CpalSink {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        self.ep.recover()?;
        let rate = self.ep.stream.device_rate;
        let data = if rate == SAMPLE_RATE {
            frame.to_vec()
        } else {
            resample_linear(frame, SAMPLE_RATE, rate)
        };
        // Keep at most ~2 writes (and at least 40 ms, so a device with long periods does not
        // run dry) queued: each queued sample is latency. Block while the device drains.
        let limit = (data.len() * 2).max(rate as usize / 25);
        let shared = self.ep.shared.clone();
        let mut q = shared
            .queue
            .lock()
            .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
        while q.len() > limit {
            let (guard, timeout) = shared
                .ready
                .wait_timeout(q, Duration::from_secs(2))
                .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
            q = guard;
            if shared.lost.load(Ordering::SeqCst) {
                drop(q);
                return self.write(frame);
            }
            if timeout.timed_out() {
                return Err(MediaError::DeviceUnavailable {
                    name: self.ep.stream.name.clone(),
                    reason: "the device stopped consuming audio for 2 s".into(),
                });
            }
        }
        q.extend(data);
        Ok(())
    }

    /// Waits (a bounded time) until the device has played what is queued, so the end of a
    /// sound is not cut off when the stream closes.
    fn finish(&mut self) -> Result<(), MediaError> {
        let shared = self.ep.shared.clone();
        let mut q = shared
            .queue
            .lock()
            .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while !q.is_empty() && !shared.lost.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let (guard, _) = shared
                .ready
                .wait_timeout(q, left)
                .map_err(|_| MediaError::Device("audio queue poisoned".into()))?;
            q = guard;
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.ep.stream.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_devices_never_panics() {
        // No sound card here: the list may be empty or hold only `null`; both are fine.
        let list = list_devices().expect("listing works even with no sound card");
        for d in &list {
            assert!(!d.id.is_empty());
        }
    }

    #[test]
    fn unknown_device_is_a_clear_error() {
        let e = CpalSource::open(Some("no-such-microphone")).expect_err("must not exist");
        let msg = e.to_string();
        assert!(msg.contains("no-such-microphone"), "{msg}");
        assert!(msg.contains("input"), "{msg}");
        let e = CpalSink::open(Some("no-such-speaker")).expect_err("must not exist");
        assert!(e.to_string().contains("no-such-speaker"));
    }

    #[test]
    fn default_device_opens_or_fails_cleanly() {
        // Without a sound card there may be no default input (a typed error that says what to
        // use instead), or only ALSA's `null` device, which opens. Either way no panic, and a
        // device that opens delivers frames of real samples.
        match CpalSource::open(None) {
            Ok(mut src) => {
                let name = src.name();
                assert!(!name.is_empty());
                for k in 0..5 {
                    let mut f = vec![f32::NAN; 960];
                    src.read(&mut f)
                        .unwrap_or_else(|e| panic!("'{name}' opened, but frame {k} failed: {e}"));
                    assert!(
                        f.iter().all(|x| x.is_finite() && x.abs() <= 1.0),
                        "'{name}' frame {k} holds no samples in -1..=1: {:?}",
                        &f[..8]
                    );
                }
            }
            Err(e) => {
                let msg = e.to_string();
                match &e {
                    MediaError::NoDevice { direction, .. } => {
                        assert_eq!(*direction, "input", "{msg}");
                        assert!(msg.contains("WAV file or tone source"), "{msg}");
                    }
                    MediaError::DeviceUnavailable { name, reason } => {
                        assert!(!name.is_empty() && !reason.is_empty(), "{msg}");
                    }
                    other => panic!("not a device error: {other:?}"),
                }
            }
        }
    }
}
