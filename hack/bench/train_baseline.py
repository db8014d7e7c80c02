"""Issue #5's baseline: scikit-learn TF-IDF (word 1-2-grams + char_wb 2-5-grams, sublinear tf)
+ LinearSVC(C=0.5, class_weight='balanced'), trained on the given CSV files (text, label) and
scored on a test CSV. Prints one `key value` per line for hack/bench-train.sh.

Timed: vectorizer fit + transform and the SVM fit (reading the CSVs is not), the same span the
Rust trainer reports as "trained in".
"""
import csv
import sys
import time

import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_union
from sklearn.svm import LinearSVC


def load(paths):
    texts, labels = [], []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                texts.append(row[0])
                labels.append(row[1].split(";")[0])
    return texts, labels


def main():
    *train_files, test_file = sys.argv[1:]
    texts, labels = load(train_files)
    test_texts, test_labels = load([test_file])
    started = time.perf_counter()
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    )
    matrix = features.fit_transform(texts)
    model = LinearSVC(C=0.5, class_weight="balanced").fit(matrix, labels)
    seconds = time.perf_counter() - started
    predicted = model.predict(features.transform(test_texts))
    print(f"sklearn {sklearn.__version__}")
    print(f"seconds {seconds:.4f}")
    print(f"examples {len(texts)}")
    print(f"accuracy {accuracy_score(test_labels, predicted):.4f}")
    print(f"macro_f1 {f1_score(test_labels, predicted, average='macro'):.4f}")


if __name__ == "__main__":
    main()
