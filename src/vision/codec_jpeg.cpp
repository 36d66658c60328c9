// JPEG through libjpeg(-turbo): grey and YCbCr come out as RGB; CMYK and YCCK (Adobe, stored inverted) come out as
// CMYK and are converted as Pillow's CMYK -> RGB does: r = (255 - c) * (255 - k) / 255 rounded (ink amounts). libjpeg reports errors through error_exit, which longjmps here.
#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>
// after jpeglib.h
#include <jerror.h>

#include <fmt/format.h>

#include "core/error.h"
#include "vision/codecs.h"

namespace quatre::vision::detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings are ignored except a premature end of data, which Pillow reports as a truncated image.
void emit_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) error_exit(cinfo);
}

uint8_t mul_div_255(uint32_t a, uint32_t b) {
  const uint32_t t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

// false with `error` set when libjpeg fails; throws InvalidRequest for sizes over the limits.
bool read_jpeg(std::string_view bytes, RgbaImage& out, const std::string& what, const DecodeLimits& limits, std::string& error) {
  jpeg_decompress_struct cinfo{};
  ErrorManager err{};
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = error_exit;
  err.pub.emit_message = emit_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    error = err.message;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.mem->max_memory_to_use = 512L << 20;
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  try {
    check_dimensions(cinfo.image_width, cinfo.image_height, what, limits);
  } catch (const InvalidRequest&) {
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int64_t w = cinfo.output_width, h = cinfo.output_height, nc = cinfo.output_components;
  out.width = w;
  out.height = h;
  out.rgba.assign(static_cast<size_t>(w * h * 4), 255);
  JSAMPARRAY row = (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                              static_cast<JDIMENSION>(w * nc), 1);
  const bool inverted = cmyk && cinfo.saw_Adobe_marker;
  while (cinfo.output_scanline < cinfo.output_height) {
    const int64_t y = cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, row, 1);
    uint8_t* dst = out.rgba.data() + y * w * 4;
    for (int64_t x = 0; x < w; ++x) {
      const JSAMPLE* s = row[0] + x * nc;
      if (!cmyk) {
        for (int c = 0; c < 3; ++c) dst[x * 4 + c] = s[c];
        continue;
      }
      // ink amounts: Adobe files store 255 - ink
      const uint32_t k = inverted ? 255u - s[3] : s[3];
      for (int c = 0; c < 3; ++c) {
        const uint32_t ink = inverted ? 255u - s[c] : s[c];
        dst[x * 4 + c] = mul_div_255(255u - ink, 255u - k);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

RgbaImage decode_jpeg(std::string_view bytes, const std::string& what, const DecodeLimits& limits) {
  RgbaImage out;
  std::string error;
  if (!read_jpeg(bytes, out, what, limits, error)) throw InvalidRequest(fmt::format("{}: cannot decode the JPEG: {}", what, error));
  return out;
}

}  // namespace quatre::vision::detail
