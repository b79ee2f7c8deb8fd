#include "engine/experiments/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace ipna {

namespace {

// One CSV record: fields split at commas, a field may be quoted ("..." with "" for a quote).
std::vector<std::string> csv_fields(const std::string& line, const std::string& where) {
  std::vector<std::string> out;
  std::string f;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        f += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        f += c;
      }
    } else if (c == '"' && f.find_first_not_of(" \t") == std::string::npos && !was_quoted) {
      f.clear();
      quoted = was_quoted = true;
    } else if (c == ',') {
      out.push_back(f);
      f.clear();
      was_quoted = false;
    } else {
      f += c;
    }
  }
  if (quoted) throw Error(where + ": a quoted field is not closed");
  out.push_back(f);
  for (auto& s : out) {  // surrounding blanks are not part of a value
    const size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
    s = a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  }
  return out;
}

std::vector<Box> parse_box_list(const std::string& text, const std::string& where) {
  std::vector<Box> boxes;
  std::stringstream all(text);
  std::string one;
  while (std::getline(all, one, ';')) {
    std::stringstream ss(one);
    std::vector<int> v;
    std::string tok;
    while (ss >> tok) v.push_back(parse_non_negative(tok, where + ", boxes"));
    if (v.empty()) continue;
    if (v.size() != 4) throw Error(where + ", boxes: a box takes four numbers X1 Y1 X2 Y2, got '" + one + "'");
    boxes.push_back({v[0], v[1], v[2], v[3]});
  }
  return boxes;
}

bool has_suffix(std::string s, const std::string& suffix) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_item_file(const std::string& name) {
  return has_suffix(name, ".jpg") || has_suffix(name, ".jpeg") || has_suffix(name, ".png") || has_suffix(name, ".npy");
}

}  // namespace

int parse_non_negative(const std::string& text, const std::string& where) {
  size_t used = 0;
  long v = -1;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < 0 || v > (1 << 30))
    throw Error(where + ": expected a non-negative integer, got '" + text + "'");
  return static_cast<int>(v);
}

Dataset read_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open the manifest");
  Dataset d;
  d.origin = "manifest " + path;
  std::string line;
  if (!std::getline(in, line)) throw Error(path + ": the manifest is empty (expected a header row: path,class,...)");
  const std::vector<std::string> header = csv_fields(line, path + " line 1");
  int col_path = -1, col_class = -1, col_label = -1, col_boxes = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    int* slot = header[i] == "path" ? &col_path
                : header[i] == "class" ? &col_class
                : header[i] == "label" ? &col_label
                : header[i] == "boxes" ? &col_boxes : nullptr;
    if (!slot)
      throw Error(path + " line 1: unknown column '" + header[i] + "' (the columns are path, class, label, boxes)");
    if (*slot >= 0) throw Error(path + " line 1: column '" + header[i] + "' appears twice");
    *slot = static_cast<int>(i);
  }
  if (col_path < 0) throw Error(path + " line 1: the manifest needs a 'path' column");
  const fs::path base = fs::path(path).parent_path();
  d.has_labels = col_label >= 0;
  d.has_boxes = col_boxes >= 0;
  int line_no = 1;
  size_t box_count = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(line_no);
    const std::vector<std::string> f = csv_fields(line, where);
    if (f.size() != header.size())
      throw Error(where + ": " + std::to_string(f.size()) + " fields, the header has " + std::to_string(header.size()));
    DatasetItem it;
    if (f[col_path].empty()) throw Error(where + ": the path is empty");
    const fs::path p(f[col_path]);
    it.source = (p.is_absolute() || base.empty() ? p : base / p).lexically_normal().string();
    if (col_class >= 0) {
      if (f[col_class] == "predicted" || f[col_class].empty())
        it.predicted = f[col_class] == "predicted";
      else
        it.cls = parse_non_negative(f[col_class], where + ", class");
    }
    if (col_label >= 0) it.label = parse_non_negative(f[col_label], where + ", label");
    if (col_boxes >= 0) {
      it.boxes = parse_box_list(f[col_boxes], where);
      if (it.boxes.empty()) throw Error(where + ": the boxes column is empty");
      if (d.items.empty()) box_count = it.boxes.size();
      if (it.boxes.size() != box_count)
        throw Error(where + ": " + std::to_string(it.boxes.size()) + " boxes, the first row has " +
                    std::to_string(box_count) + " (every row needs the same number: the maps are stored per box)");
    }
    d.items.push_back(std::move(it));
  }
  if (d.items.empty()) throw Error(path + ": the manifest lists no items");
  return d;
}

Dataset read_image_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir + ": not a folder (expected one sub-folder per class)");
  Dataset d;
  d.origin = "image folder " + dir;
  d.has_labels = true;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.') d.class_names.push_back(e.path().filename());
  std::sort(d.class_names.begin(), d.class_names.end());
  if (d.class_names.empty()) throw Error(dir + ": no class folders (expected DIR/CLASS/IMAGE)");
  for (size_t c = 0; c < d.class_names.size(); ++c) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(fs::path(dir) / d.class_names[c]))
      if (!e.is_directory() && is_item_file(e.path().filename())) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      DatasetItem it;
      it.source = std::move(f);
      it.label = static_cast<int>(c);
      d.items.push_back(std::move(it));
    }
  }
  if (d.items.empty()) throw Error(dir + ": the class folders hold no .jpg, .jpeg, .png or .npy files");
  return d;
}

Dataset read_idx_items(const std::string& dir, const std::string& split) {
  if (split != "test" && split != "train") throw Error("IDX split: expected test or train, got '" + split + "'");
  Dataset d;
  d.origin = "IDX " + dir + " (" + split + ")";
  auto ds = std::make_shared<IdxDataset>(read_idx_dataset(dir, split));
  d.has_labels = true;
  for (int i = 0; i < ds->images.count; ++i) {
    DatasetItem it;
    it.source = dir + "#" + std::to_string(i);
    it.label = ds->labels[i];
    it.idx_image = i;
    d.items.push_back(std::move(it));
  }
  d.idx = std::move(ds);
  return d;
}

std::vector<double> load_item(const Dataset& d, const DatasetItem& item, const Shape& shape, const Normalization& n) {
  if (item.idx_image >= 0) {
    const IdxImages& im = d.idx->images;
    if (shape != Shape{1, im.rows, im.cols})
      throw Error(d.origin + ": the model takes " + shape.str() + ", the dataset has 1x" + std::to_string(im.rows) +
                  "x" + std::to_string(im.cols) + " images");
    const size_t per = static_cast<size_t>(im.rows) * im.cols;
    std::vector<double> x(per);
    for (size_t j = 0; j < per; ++j) x[j] = (im.pixels[item.idx_image * per + j] / 255.0 - n.mean[0]) / n.std[0];
    return x;
  }
  if (has_suffix(item.source, ".npy")) return read_sample(item.source, shape, "the input");
  if (shape.rank() != 3 || (shape.channels() != 1 && shape.channels() != 3))
    throw Error(item.source + ": images need a model with a 1- or 3-channel (C,H,W) input; this model takes " +
                shape.str() + ": give .npy tensors instead");
  Image img;
  try {
    img = load_image_rgb(item.source);
  } catch (const Error& e) {
    const std::string what = e.what();
    throw Error(what.find(item.source) == std::string::npos ? "'" + item.source + "': " + what : what);
  }
  if (img.height == shape.height() && img.width == shape.width()) {
    // The model's own size: the pixels as they are (a 1-channel model takes the gray value).
    std::vector<double> x = to_chw(img, n.mean.size() == 3 ? n.mean : std::vector<double>(3, n.mean[0]),
                                   n.std.size() == 3 ? n.std : std::vector<double>(3, n.std[0]));
    if (shape.channels() == 1) x.resize(shape.numel());
    return x;
  }
  return image_input(item.source, img, shape, n);
}

}  // namespace ipna
