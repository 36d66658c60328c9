// PNG through libpng's classic API: palette, grey and low bit depths expanded, tRNS to alpha, 16-bit to its high
// byte (as Pillow's RGB;16B unpacking), one RGBA row per image row. Only the default image is read (APNG frames
// are ignored). libpng reports errors by longjmp, so nothing with a destructor lives in the setjmp frame.
#include <png.h>

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "vision/codecs.h"

namespace quatre::vision::detail {
namespace {

struct Reader {
  const unsigned char* data;
  size_t size;
  size_t pos;
  char message[200];
};

void read_fn(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "truncated data");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

void error_fn(png_structp png, png_const_charp msg) {
  auto* r = static_cast<Reader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);
}

void warning_fn(png_structp, png_const_charp) {}

// False with `error` set when libpng fails; throws InvalidRequest for sizes over the limits.
bool read_png(Reader& r, RgbaImage& out, const std::string& what, const DecodeLimits& limits, std::string& error) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, error_fn, warning_fn);
  if (png == nullptr) {
    error = "out of memory";
    return false;
  }
  png_infop info = png_create_info_struct(png);
  png_bytep* volatile rows = nullptr;  // set after setjmp: volatile
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_free(png, rows);
    png_destroy_read_struct(&png, &info, nullptr);
    error = r.message[0] != '\0' ? r.message : "corrupt PNG";
    return false;
  }
  png_set_read_fn(png, &r, read_fn);
  png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);  // our own limits, with our message, below
  png_set_chunk_malloc_max(png, 8u << 20);
  png_read_info(png, info);
  const int64_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  try {
    check_dimensions(w, h, what, limits);
  } catch (const InvalidRequest&) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw;
  }
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_gray_to_rgb(png);
  png_set_filler(png, 0xff, PNG_FILLER_AFTER);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(w) * 4) png_error(png, "unexpected row size after transforms");
  out.width = w;
  out.height = h;
  out.rgba.resize(static_cast<size_t>(w * h * 4));
  rows = static_cast<png_bytep*>(png_malloc(png, sizeof(png_bytep) * static_cast<size_t>(h)));
  for (int64_t y = 0; y < h; ++y) rows[y] = out.rgba.data() + y * w * 4;
  png_read_image(png, rows);
  png_free(png, rows);
  rows = nullptr;
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace

RgbaImage decode_png(std::string_view bytes, const std::string& what, const DecodeLimits& limits) {
  Reader r{reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), 0, {}};
  RgbaImage out;
  std::string error;
  if (!read_png(r, out, what, limits, error)) throw InvalidRequest(fmt::format("{}: cannot decode the PNG: {}", what, error));
  return out;
}

}  // namespace quatre::vision::detail
