// GIF through giflib, first frame only: the logical screen filled with the background colour (transparent when the
// background index is the transparent one), the first image drawn at its offset (interlaced rows put in place),
// its transparent index (graphics control extension) as alpha 0. Later frames are never read, so a file with
// many frames costs no more than its first.
#include <gif_lib.h>

#include <array>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "vision/codecs.h"

namespace quatre::vision::detail {
namespace {

struct Source {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

int read_fn(GifFileType* gif, GifByteType* out, int n) {
  auto* s = static_cast<Source*>(gif->UserData);
  const size_t k = std::min(static_cast<size_t>(n), s->size - s->pos);
  std::memcpy(out, s->data + s->pos, k);
  s->pos += k;
  return static_cast<int>(k);
}

struct GifCloser {
  GifFileType* gif;
  ~GifCloser() {
    int err = 0;
    if (gif != nullptr) DGifCloseFile(gif, &err);
  }
};

[[noreturn]] void fail(const std::string& what, int code) {
  const char* msg = GifErrorString(code);
  throw InvalidRequest(fmt::format("{}: cannot decode the GIF: {}", what, msg != nullptr ? msg : "corrupt data"));
}

// The row order of an interlaced image: passes starting at 0, 4, 2, 1 with steps 8, 8, 4, 2.
std::vector<int> row_order(int height, bool interlaced) {
  std::vector<int> rows;
  if (!interlaced) {
    for (int y = 0; y < height; ++y) rows.push_back(y);
    return rows;
  }
  constexpr std::array<int, 4> start{0, 4, 2, 1}, step{8, 8, 4, 2};
  for (int p = 0; p < 4; ++p) {
    for (int y = start[p]; y < height; y += step[p]) rows.push_back(y);
  }
  return rows;
}

}  // namespace

RgbaImage decode_gif(std::string_view bytes, const std::string& what, const DecodeLimits& limits) {
  Source src{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), 0};
  int err = 0;
  GifCloser closer{DGifOpen(&src, read_fn, &err)};
  GifFileType* gif = closer.gif;
  if (gif == nullptr) fail(what, err);
  check_dimensions(gif->SWidth, gif->SHeight, what, limits);
  int transparent = -1;
  while (true) {
    GifRecordType type;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR) fail(what, gif->Error);
    if (type == TERMINATE_RECORD_TYPE) throw InvalidRequest(fmt::format("{}: the GIF has no image", what));
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* ext = nullptr;
      if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) fail(what, gif->Error);
      while (ext != nullptr) {
        if (code == GRAPHICS_EXT_FUNC_CODE && ext[0] >= 4 && (ext[1] & 1) != 0) transparent = ext[4];
        if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) fail(what, gif->Error);
      }
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif) == GIF_ERROR) fail(what, gif->Error);
    const GifImageDesc& d = gif->Image;
    const ColorMapObject* map = d.ColorMap != nullptr ? d.ColorMap : gif->SColorMap;
    if (map == nullptr) throw InvalidRequest(fmt::format("{}: the GIF has no colour table", what));
    if (d.Width <= 0 || d.Height <= 0 || d.Left < 0 || d.Top < 0 || d.Left + d.Width > gif->SWidth ||
        d.Top + d.Height > gif->SHeight) {
      throw InvalidRequest(fmt::format("{}: the GIF's first frame ({}x{} at {},{}) lies outside its {}x{} screen", what,
                                       d.Width, d.Height, d.Left, d.Top, gif->SWidth, gif->SHeight));
    }
    auto colour = [&](int index, uint8_t* px) {
      if (index == transparent || index < 0 || index >= map->ColorCount) {
        px[0] = px[1] = px[2] = 0;
        px[3] = index == transparent ? 0 : 255;
        return;
      }
      px[0] = map->Colors[index].Red;
      px[1] = map->Colors[index].Green;
      px[2] = map->Colors[index].Blue;
      px[3] = 255;
    };
    RgbaImage out;
    out.width = gif->SWidth;
    out.height = gif->SHeight;
    out.rgba.resize(static_cast<size_t>(out.width * out.height * 4));
    for (int64_t i = 0; i < out.width * out.height; ++i) colour(gif->SBackGroundColor, &out.rgba[static_cast<size_t>(i * 4)]);
    std::vector<GifPixelType> line(static_cast<size_t>(d.Width));
    for (int y : row_order(d.Height, d.Interlace)) {
      if (DGifGetLine(gif, line.data(), d.Width) == GIF_ERROR) fail(what, gif->Error);
      uint8_t* dst = &out.rgba[static_cast<size_t>(((d.Top + y) * out.width + d.Left) * 4)];
      for (int x = 0; x < d.Width; ++x) colour(line[static_cast<size_t>(x)], dst + x * 4);
    }
    return out;
  }
}

}  // namespace quatre::vision::detail
