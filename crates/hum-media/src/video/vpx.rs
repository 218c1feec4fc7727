//! The only unsafe code in hum-media: a thin FFI layer over the system libvpx (VP8).
//!
//! Everything here is `pub(crate)`; [`super::vp8`] builds the safe API on top. Each libvpx
//! context lives in a `Box` (libvpx keeps pointers into it), is used through `&mut self` only
//! (libvpx contexts are not thread-safe but have no thread affinity, hence `Send`), and is
//! destroyed exactly once in `Drop`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_int, c_uint};
use std::ptr;

use vpx_sys as ffi;

use super::{VideoError, VideoFrame};

/// Encoder settings that libvpx takes at init or through `vpx_codec_enc_config_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEncoderConfig {
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
    pub threads: u32,
    pub min_q: u32,
    pub max_q: u32,
    pub drop_frame_pct: u32,
    // libvpx controls applied after init.
    pub cpu_used: i32,
    pub static_threshold: u32,
    pub screen_content: u32,
    pub noise_sensitivity: u32,
    pub max_intra_pct: u32,
}

/// One compressed frame as libvpx returned it.
#[derive(Debug)]
pub(crate) struct RawPacket {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

fn err_text(ctx: *mut ffi::vpx_codec_ctx_t, err: ffi::vpx_codec_err_t) -> String {
    // SAFETY: vpx_codec_err_to_string returns a static NUL-terminated string for any code.
    let mut s = unsafe { CStr::from_ptr(ffi::vpx_codec_err_to_string(err)) }
        .to_string_lossy()
        .into_owned();
    if !ctx.is_null() {
        // SAFETY: ctx points to a context initialised by vpx_codec_*_init; error_detail returns
        // NULL or a NUL-terminated string owned by the context, copied here at once.
        let detail = unsafe { ffi::vpx_codec_error_detail(ctx) };
        if !detail.is_null() {
            // SAFETY: non-null, NUL-terminated (see above).
            let d = unsafe { CStr::from_ptr(detail) }.to_string_lossy();
            s.push_str(": ");
            s.push_str(&d);
        }
    }
    s
}

fn check(
    ctx: *mut ffi::vpx_codec_ctx_t,
    err: ffi::vpx_codec_err_t,
    op: &'static str,
) -> Result<(), VideoError> {
    if err == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(VideoError::Codec {
            op,
            reason: err_text(ctx, err),
        })
    }
}

/// A VP8 encoder context.
pub(crate) struct RawEncoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: Box<ffi::vpx_codec_enc_cfg_t>,
}

// SAFETY: the context is only touched through &mut self; libvpx keeps no thread-local state
// for it, so moving it to another thread between calls is fine.
unsafe impl Send for RawEncoder {}

impl RawEncoder {
    pub fn new(c: &RawEncoderConfig) -> Result<Self, VideoError> {
        // SAFETY: returns a pointer to libvpx's static VP8 encoder interface.
        let iface = unsafe { ffi::vpx_codec_vp8_cx() };
        // vpx_codec_enc_cfg_t holds enums without a zero value (bit depth is 8/10/12), so it
        // is left uninitialised for config_default to fill in.
        let mut cfg = Box::new(std::mem::MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit());
        // SAFETY: iface is valid, cfg points to writable memory of the right type.
        let e = unsafe { ffi::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        check(ptr::null_mut(), e, "default config")?;
        // SAFETY: config_default returned OK, so it wrote every field of the struct.
        let mut cfg: Box<ffi::vpx_codec_enc_cfg_t> = unsafe { cfg.assume_init() };
        cfg.g_w = c.width;
        cfg.g_h = c.height;
        // 90 kHz, the RTP video clock: pts are RTP timestamp deltas.
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: 90_000,
        };
        cfg.g_threads = c.threads;
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_lag_in_frames = 0;
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = c.bitrate_kbps.max(1);
        cfg.rc_min_quantizer = c.min_q;
        cfg.rc_max_quantizer = c.max_q;
        cfg.rc_dropframe_thresh = c.drop_frame_pct;
        cfg.rc_resize_allowed = 0;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_max_dist = 3000;
        // SAFETY: a zeroed context is what vpx_codec_enc_init expects to fill in.
        let mut ctx: Box<ffi::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: ctx and cfg are valid for the call; the ABI version is the one the bindings
        // were generated for (libvpx checks it and fails cleanly on a mismatch).
        let e = unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &*cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if e != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            // A failed init leaves nothing to destroy.
            return Err(VideoError::Codec {
                op: "encoder init",
                reason: err_text(ptr::null_mut(), e),
            });
        }
        let mut enc = Self { ctx, cfg };
        use ffi::vp8e_enc_control_id as id;
        enc.control(id::VP8E_SET_CPUUSED as c_int, c.cpu_used)?;
        enc.control(
            id::VP8E_SET_STATIC_THRESHOLD as c_int,
            c.static_threshold as c_int,
        )?;
        enc.control(
            id::VP8E_SET_NOISE_SENSITIVITY as c_int,
            c.noise_sensitivity as c_int,
        )?;
        enc.control(
            id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
            c.max_intra_pct as c_int,
        )?;
        enc.control(
            id::VP8E_SET_SCREEN_CONTENT_MODE as c_int,
            c.screen_content as c_int,
        )?;
        enc.control(id::VP8E_SET_TOKEN_PARTITIONS as c_int, 0)?;
        Ok(enc)
    }

    fn control(&mut self, id: c_int, value: c_int) -> Result<(), VideoError> {
        // SAFETY: the context is initialised; every VP8 encoder control used here takes an int.
        let e = unsafe { ffi::vpx_codec_control_(&mut *self.ctx, id, value) };
        check(&mut *self.ctx, e, "encoder control")
    }

    /// Changes the target bitrate and frame rate (rate control adapts from the next frame).
    pub fn set_rate(&mut self, bitrate_kbps: u32) -> Result<(), VideoError> {
        self.cfg.rc_target_bitrate = bitrate_kbps.max(1);
        // SAFETY: context initialised; cfg is the config it was initialised with, modified.
        let e = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        check(&mut *self.ctx, e, "set bitrate")
    }

    /// Encodes one frame; returns the packets libvpx produced (none if it dropped the frame).
    pub fn encode(
        &mut self,
        frame: &VideoFrame,
        pts: i64,
        duration: u64,
        force_keyframe: bool,
    ) -> Result<Vec<RawPacket>, VideoError> {
        if frame.width() != self.cfg.g_w || frame.height() != self.cfg.g_h {
            return Err(VideoError::BadSize {
                width: frame.width(),
                height: frame.height(),
                reason: "the encoder was configured for another size",
            });
        }
        // SAFETY: vpx_image_t is plain data; zero is valid for every field.
        let mut img: ffi::vpx_image_t = unsafe { std::mem::zeroed() };
        img.fmt = ffi::vpx_img_fmt::VPX_IMG_FMT_I420;
        img.cs = ffi::vpx_color_space::VPX_CS_BT_601;
        img.range = ffi::vpx_color_range::VPX_CR_STUDIO_RANGE;
        img.w = frame.width();
        img.h = frame.height();
        img.d_w = frame.width();
        img.d_h = frame.height();
        img.bit_depth = 8;
        img.bps = 12;
        img.x_chroma_shift = 1;
        img.y_chroma_shift = 1;
        // libvpx reads the input image only (vpx_codec_encode takes it as const).
        img.planes[0] = frame.y().as_ptr() as *mut u8;
        img.planes[1] = frame.u().as_ptr() as *mut u8;
        img.planes[2] = frame.v().as_ptr() as *mut u8;
        img.stride[0] = frame.width() as c_int;
        img.stride[1] = frame.chroma_width() as c_int;
        img.stride[2] = frame.chroma_width() as c_int;
        let flags = if force_keyframe {
            ffi::VPX_EFLAG_FORCE_KF as ffi::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: img describes planes borrowed from `frame`, alive for the whole call, with
        // the sizes and strides checked above; the context is initialised.
        let e = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                &img,
                pts,
                duration as _,
                flags,
                ffi::VPX_DL_REALTIME as _,
            )
        };
        check(&mut *self.ctx, e, "encode")?;
        let mut out = Vec::new();
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: iter starts NULL and is only advanced by libvpx; the returned packet is
            // valid until the next get_cx_data/encode call, and we copy it at once.
            let pkt = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null packet from libvpx (see above).
            let pkt = unsafe { &*pkt };
            if pkt.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a frame packet the `frame` member of the union is the active one.
            let f = unsafe { pkt.data.frame };
            let data = if f.buf.is_null() || f.sz == 0 {
                Vec::new()
            } else {
                // SAFETY: libvpx guarantees buf points to sz readable bytes.
                unsafe { std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize) }.to_vec()
            };
            out.push(RawPacket {
                data,
                keyframe: f.flags & ffi::VPX_FRAME_IS_KEY != 0,
            });
        }
        Ok(out)
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new() (a failed init never builds a RawEncoder); destroyed once.
        unsafe { ffi::vpx_codec_destroy(&mut *self.ctx) };
    }
}

/// A VP8 decoder context.
pub(crate) struct RawDecoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for RawEncoder.
unsafe impl Send for RawDecoder {}

impl RawDecoder {
    pub fn new(threads: u32) -> Result<Self, VideoError> {
        // SAFETY: static VP8 decoder interface.
        let iface = unsafe { ffi::vpx_codec_vp8_dx() };
        let cfg = ffi::vpx_codec_dec_cfg_t {
            threads: threads as c_uint,
            w: 0,
            h: 0,
        };
        // SAFETY: zeroed context for init to fill.
        let mut ctx: Box<ffi::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: valid pointers for the call; ABI version of the bindings.
        let e = unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                iface,
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if e != ffi::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(VideoError::Codec {
                op: "decoder init",
                reason: err_text(ptr::null_mut(), e),
            });
        }
        Ok(Self { ctx })
    }

    /// Decodes one compressed frame. Returns whether libvpx flagged the result corrupt (it
    /// referenced a corrupt or missing frame).
    pub fn decode(&mut self, data: &[u8]) -> Result<bool, VideoError> {
        if data.is_empty() || data.len() > u32::MAX as usize {
            return Err(VideoError::Codec {
                op: "decode",
                reason: "empty or oversized frame".into(),
            });
        }
        // SAFETY: data is a live slice of data.len() bytes; no user_priv; context initialised.
        let e = unsafe {
            ffi::vpx_codec_decode(
                &mut *self.ctx,
                data.as_ptr(),
                data.len() as c_uint,
                ptr::null_mut(),
                0,
            )
        };
        check(&mut *self.ctx, e, "decode")?;
        let mut corrupt: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED writes one int through the pointer.
        let e = unsafe {
            ffi::vpx_codec_control_(
                &mut *self.ctx,
                ffi::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupt as *mut c_int,
            )
        };
        check(&mut *self.ctx, e, "corruption query")?;
        Ok(corrupt != 0)
    }

    /// The picture produced by the last `decode`, copied out; `None` if there is none.
    pub fn take_frame(
        &mut self,
        captured: std::time::Instant,
    ) -> Result<Option<VideoFrame>, VideoError> {
        let mut iter: ffi::vpx_codec_iter_t = ptr::null();
        // SAFETY: iter starts NULL; the image stays valid until the next decode call.
        let img = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
        if img.is_null() {
            return Ok(None);
        }
        // SAFETY: non-null image from libvpx.
        let img = unsafe { &*img };
        if img.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420 {
            return Err(VideoError::Codec {
                op: "decode",
                reason: format!("unexpected output format {:?}", img.fmt),
            });
        }
        let (w, h) = (img.d_w, img.d_h);
        let mut frame = VideoFrame::black(w, h, captured)?;
        let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
        let (yp, up, vp) = frame.planes_mut();
        for (plane, dst, pw, ph) in [
            (0usize, yp, w as usize, h as usize),
            (1, up, cw, ch),
            (2, vp, cw, ch),
        ] {
            let stride = img.stride[plane] as usize;
            for r in 0..ph {
                // SAFETY: libvpx's I420 image has `ph` rows of at least `pw` bytes at
                // planes[plane] + r * stride (d_w/d_h and the chroma shifts define them).
                let row =
                    unsafe { std::slice::from_raw_parts(img.planes[plane].add(r * stride), pw) };
                dst[r * pw..(r + 1) * pw].copy_from_slice(row);
            }
        }
        Ok(Some(frame))
    }
}

impl Drop for RawDecoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new(); destroyed once.
        unsafe { ffi::vpx_codec_destroy(&mut *self.ctx) };
    }
}
