// The item lists a sweep runs over: a manifest (CSV), an ImageFolder-style
// directory (one folder per class) or an IDX dataset (Fashion-MNIST). Reading
// a list checks everything that can be checked without decoding the items;
// an item that cannot be read later is a failed item of the sweep, not an error.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/experiments/inputs.h"
#include "engine/graph.h"
#include "loaders/idx.h"

namespace ipna {

struct DatasetItem {
  std::string source;             // the file, or "FOLDER#N" for the N-th IDX image
  int label = -1;                 // the dataset's class (-1: none)
  std::optional<int> cls;         // a class the manifest names for this item
  bool predicted = false;         // the manifest asks for the predicted class
  std::vector<Box> boxes;         // the manifest's boxes for this item
  int64_t idx_image = -1;         // position in the IDX file
};

struct Dataset {
  std::string origin;             // what was read: "manifest FILE", "image folder DIR", "IDX DIR (test)"
  std::vector<DatasetItem> items;
  std::vector<std::string> class_names;  // image folders: the folder names, in label order
  std::shared_ptr<const IdxDataset> idx;
  bool has_labels = false;
  bool has_boxes = false;         // every item has its own boxes (the manifest's boxes column)
};

// CSV with a header row. Columns: path (required: an image or a .npy; relative
// paths are taken from the manifest's folder), class (an index or `predicted`),
// label (the true class, recorded), boxes ("X1 Y1 X2 Y2", several separated by
// ';', the same number on every row). Any other column is refused.
Dataset read_manifest(const std::string& path);
// DIR/CLASS/FILE: classes are the sub-folders in sorted order (labels 0..K-1),
// files in each sorted; .jpg, .jpeg, .png and .npy files are taken.
Dataset read_image_folder(const std::string& dir);
// An IDX folder (t10k-* for "test", train-* for "train"), images as pixel/255.
Dataset read_idx_items(const std::string& dir, const std::string& split);

// A non-negative integer, the whole text; Error "WHERE: expected a non-negative integer" otherwise.
int parse_non_negative(const std::string& text, const std::string& where);

// The item as a model input (.npy as it is, images with the ImageNet
// preprocessing, IDX pixels normalised by n). Throws Error naming the item.
std::vector<double> load_item(const Dataset& d, const DatasetItem& item, const Shape& input_shape,
                              const Normalization& n);

}  // namespace ipna
